//! The script: who each simulated player is and what they do, drawn from ChaCha
//! generators seeded by `--seed`, so that the same seed and arguments give the same
//! script. Each player has a generator of their own (from the seed and their index), so
//! one player's draws never depend on how the others' tasks were scheduled.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// What a run does (`--scenario`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Players in wheel rooms spin at their profile's pace.
    Wheel,
    /// Players play quiz games: join, answer every question.
    Quiz,
    /// Referral claims at `--rate` per second, with activations and partner conversions.
    ReferralStorm,
    /// Wheels, chat, quizzes and referrals together.
    Mixed,
    /// Wheels and chat, with most players dropping their connection and resuming.
    Churn,
    /// Mixed load while the server the sim owns is killed (SIGKILL) and restarted.
    Crash,
    /// Rooms of `--room-size`, one chat line per player every `--period-ms`.
    Fanout,
}

/// How a simulated player behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Spins now and then, chats a little.
    Casual,
    /// Spins as fast as the wheel lets them.
    Grinder,
    /// Shares a referral code that many others claim.
    Influencer,
    /// Drops the connection and resumes, again and again.
    Churner,
}

/// What a player's session is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activity {
    /// Sits in a wheel room: spins and chats.
    Wheel,
    /// Plays quiz games.
    Quiz,
    /// Claims an influencer's code, then finishes a first game (a spin).
    Referee,
    /// Only chats in a wheel room (the fanout shape).
    Chat,
}

/// One step of a player's script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Action {
    Spin {
        client_seed: String,
    },
    Chat,
    /// Claim the code of influencer number `influencer` (an index among influencers).
    Claim {
        influencer: usize,
    },
    /// Drop the connection and resume.
    Reconnect,
}

/// A step and how long after the previous one it comes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub after_ms: u64,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlayerPlan {
    pub index: usize,
    pub id: String,
    pub profile: Profile,
    pub activity: Activity,
    /// The seed of this player's generator (their steps and their quiz answers).
    pub seed: u64,
}

/// The knobs the script depends on.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub scenario: Scenario,
    pub players: usize,
    pub seed: u64,
    /// Fanout: a chat line per player this often.
    pub period_ms: u64,
    /// Referral storm: claims per second over all players.
    pub claims_per_second: f64,
}

/// One in this many players of a referral scenario is an influencer.
const INFLUENCER_EVERY: usize = 50;

impl Shape {
    pub fn influencers(&self) -> usize {
        match self.scenario {
            Scenario::ReferralStorm | Scenario::Mixed | Scenario::Crash => {
                self.players.div_ceil(INFLUENCER_EVERY).max(1)
            }
            _ => 0,
        }
    }

    /// Every player's plan. Influencers come first (indexes `0..influencers()`).
    pub fn players(&self) -> Vec<PlayerPlan> {
        let influencers = self.influencers();
        (0..self.players)
            .map(|index| {
                let seed = player_seed(self.seed, index);
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let (profile, activity) = if index < influencers {
                    (Profile::Influencer, Activity::Wheel)
                } else {
                    self.draw_role(&mut rng)
                };
                PlayerPlan {
                    index,
                    id: format!("sim-{}-{index}", self.seed),
                    profile,
                    activity,
                    seed,
                }
            })
            .collect()
    }

    fn draw_role(&self, rng: &mut ChaCha8Rng) -> (Profile, Activity) {
        let roll: u32 = rng.random_range(0..100);
        let casual_or_grinder = if rng.random_range(0..4) == 0 {
            Profile::Grinder
        } else {
            Profile::Casual
        };
        match self.scenario {
            Scenario::Wheel => (casual_or_grinder, Activity::Wheel),
            Scenario::Quiz => (Profile::Casual, Activity::Quiz),
            Scenario::ReferralStorm => (Profile::Casual, Activity::Referee),
            Scenario::Fanout => (Profile::Casual, Activity::Chat),
            Scenario::Churn => match roll {
                0..70 => (Profile::Churner, Activity::Wheel),
                _ => (casual_or_grinder, Activity::Wheel),
            },
            Scenario::Mixed => match roll {
                0..40 => (casual_or_grinder, Activity::Wheel),
                40..60 => (Profile::Casual, Activity::Quiz),
                60..75 => (Profile::Casual, Activity::Chat),
                75..90 => (Profile::Casual, Activity::Referee),
                _ => (Profile::Churner, Activity::Wheel),
            },
            // No quizzes across kills: a game's timers restart with the server, and the
            // invariants are about what was acknowledged, which wheels and claims show.
            Scenario::Crash => match roll {
                0..55 => (casual_or_grinder, Activity::Wheel),
                55..75 => (Profile::Casual, Activity::Chat),
                75..95 => (Profile::Casual, Activity::Referee),
                _ => (Profile::Churner, Activity::Wheel),
            },
        }
    }

    /// A player's steps, in order, for as long as `duration_ms` lasts (the first one
    /// may come at once). Quiz players have none: they answer what they are asked.
    pub fn steps(&self, plan: &PlayerPlan, duration_ms: u64) -> Vec<Step> {
        let mut rng = ChaCha8Rng::seed_from_u64(plan.seed ^ 0x5eed_57e9);
        let mut steps = Vec::new();
        let mut at_ms = 0u64;
        let push = |steps: &mut Vec<Step>, at_ms: &mut u64, after_ms: u64, action| {
            *at_ms = at_ms.saturating_add(after_ms);
            steps.push(Step { after_ms, action });
        };
        match plan.activity {
            Activity::Quiz => {}
            Activity::Referee => {
                // Claims spread evenly over the run at the storm's rate, then the
                // referee's first game.
                let spread_ms =
                    (self.players as f64 / self.claims_per_second.max(0.001) * 1000.0) as u64;
                let first = rng.random_range(0..spread_ms.clamp(1, duration_ms.max(1)));
                let influencer = rng.random_range(0..self.influencers().max(1));
                push(&mut steps, &mut at_ms, first, Action::Claim { influencer });
                let spin_after = rng.random_range(200..2_000);
                push(
                    &mut steps,
                    &mut at_ms,
                    spin_after,
                    Action::Spin {
                        client_seed: format!("r{}", rng.random_range(0..u32::MAX)),
                    },
                );
            }
            Activity::Chat => {
                let period = self.period_ms.max(1);
                // Senders spread over the period, so the load is even, not a pulse.
                let mut after = rng.random_range(0..period);
                while at_ms + after < duration_ms {
                    push(&mut steps, &mut at_ms, after, Action::Chat);
                    after = period;
                }
            }
            Activity::Wheel => {
                let (low, high) = match plan.profile {
                    Profile::Grinder => (600, 1_500),
                    _ => (2_000, 8_000),
                };
                let mut next_reconnect = if plan.profile == Profile::Churner {
                    rng.random_range(3_000..10_000)
                } else {
                    u64::MAX
                };
                loop {
                    let after = rng.random_range(low..high);
                    if at_ms + after >= duration_ms {
                        break;
                    }
                    if at_ms + after >= next_reconnect {
                        let gap = next_reconnect.saturating_sub(at_ms);
                        push(&mut steps, &mut at_ms, gap, Action::Reconnect);
                        next_reconnect = at_ms + rng.random_range(5_000..15_000);
                        continue;
                    }
                    let action = if rng.random_range(0..5) == 0 {
                        Action::Chat
                    } else {
                        Action::Spin {
                            client_seed: format!("s{}", rng.random_range(0..u32::MAX)),
                        }
                    };
                    push(&mut steps, &mut at_ms, after, action);
                }
            }
        }
        steps
    }

    /// When the sim kills the server it owns (crash scenario): times after the load
    /// starts, none in the last third of the run, so that the end is checked on a
    /// server that has settled.
    pub fn kills(&self, duration_ms: u64) -> Vec<u64> {
        if self.scenario != Scenario::Crash {
            return Vec::new();
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0xdead_beef);
        let window = (duration_ms * 2 / 3).max(1);
        let count = (duration_ms / 8_000).clamp(1, 20);
        let mut kills: Vec<u64> = (0..count)
            .map(|_| rng.random_range(window / 10..window.max(window / 10 + 1)))
            .collect();
        kills.sort_unstable();
        kills
    }
}

/// The seed of player `index`'s generator.
pub fn player_seed(seed: u64, index: usize) -> u64 {
    // SplitMix64 of (seed, index): neighbouring players get unrelated generators.
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(index as u64 + 1));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(scenario: Scenario, seed: u64) -> Shape {
        Shape {
            scenario,
            players: 200,
            seed,
            period_ms: 1_000,
            claims_per_second: 50.0,
        }
    }

    fn script(shape: &Shape) -> Vec<(PlayerPlan, Vec<Step>)> {
        shape
            .players()
            .into_iter()
            .map(|plan| {
                let steps = shape.steps(&plan, 20_000);
                (plan, steps)
            })
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_script_and_another_seed_another() {
        for scenario in [Scenario::Mixed, Scenario::Crash, Scenario::Churn] {
            let one = script(&shape(scenario, 7));
            assert_eq!(one, script(&shape(scenario, 7)), "{scenario:?}");
            assert_ne!(one, script(&shape(scenario, 8)), "{scenario:?}");
            assert_eq!(
                shape(scenario, 7).kills(60_000),
                shape(scenario, 7).kills(60_000)
            );
        }
    }

    #[test]
    fn a_mixed_script_has_every_role_and_steps_within_the_run() {
        let script = script(&shape(Scenario::Mixed, 3));
        for activity in [
            Activity::Wheel,
            Activity::Quiz,
            Activity::Referee,
            Activity::Chat,
        ] {
            assert!(script.iter().any(|(plan, _)| plan.activity == activity));
        }
        assert!(
            script
                .iter()
                .any(|(plan, _)| plan.profile == Profile::Churner)
        );
        for (plan, steps) in &script {
            let total: u64 = steps.iter().map(|step| step.after_ms).sum();
            assert!(total < 20_000 + 2_000, "{} runs past the end", plan.id);
        }
        let influencers = shape(Scenario::Mixed, 3).influencers();
        for (_, steps) in &script {
            for step in steps {
                if let Action::Claim { influencer } = step.action {
                    assert!(influencer < influencers);
                }
            }
        }
    }

    #[test]
    fn kills_fall_in_the_first_two_thirds_of_a_crash_run_only() {
        let kills = shape(Scenario::Crash, 1).kills(60_000);
        assert!(!kills.is_empty());
        assert!(kills.iter().all(|kill| *kill < 40_000));
        assert!(shape(Scenario::Mixed, 1).kills(60_000).is_empty());
    }
}
