//! The referral tree entity: one per tree, keyed by its root player. It attaches
//! referees below their referrers (step 3 of a claim, see `crate::claim`), pays rewards
//! per level by letter (credits to the wallets, exactly once), keeps every player's
//! counters as the tree grows, and tells its players what happened, by letter too: a
//! player away hears it when they come back.
//!
//! Trees never merge and never hold a cycle: every node a tree gains is a leaf
//! (`crate::claim` says why).

pub mod msg;
pub mod state;
#[cfg(test)]
mod tests;

pub use msg::TreeInput;
pub use state::{
    LEVELS_TRACKED, Node, Reward, RewardOutcome, TreeEntity, TreeEvent, TreeState, ancestors,
};

use crate::claim::{self, Attach};
use crate::config::GameConfig;
use crate::mail::{
    Address, Attachment, Body, ClaimAnswer, Credit, EntityKind, HandOff, Letter, PlayerNews,
    RewardNews,
};
use crate::runtime::{ActivationError, Behaviour, Decide, Env, refusal};
use crate::store::{WriteOp, decode_value, encode_value};
use playtree_protocol::{
    ErrorCode, ErrorReply, Event, ReplyBody, RewardState, RewardTrigger, StreamId,
};
use playtree_protocol::{LogEntry, LogEvent};
use std::sync::atomic::{AtomicU64, Ordering};

/// A tree's decision context.
type Cx<'a> = Decide<'a, TreeEntity>;

/// The referral funnel since the process started, for the K-factor gauge: players who
/// referred someone, referees accepted, referees activated.
static REFERRERS: AtomicU64 = AtomicU64::new(0);
static REFEREES: AtomicU64 = AtomicU64::new(0);
static ACTIVATED: AtomicU64 = AtomicU64::new(0);

/// Counts one step of the funnel (once durable) and updates the K-factor gauge:
/// referees per referrer × the share of referees who activated (= activated referees
/// per referrer).
fn count_funnel(counter: &'static AtomicU64, name: &'static str) {
    counter.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("playtree_referral_funnel_total", "step" => name).increment(1);
    let referrers = REFERRERS.load(Ordering::Relaxed);
    if referrers > 0 {
        let referees = REFEREES.load(Ordering::Relaxed) as f64;
        let activated = ACTIVATED.load(Ordering::Relaxed) as f64;
        let per_referrer = referees / referrers as f64;
        let activation_rate = if referees > 0.0 {
            activated / referees
        } else {
            0.0
        };
        metrics::gauge!("playtree_referral_k_factor").set(per_referrer * activation_rate);
    }
}

/// What a tree keeps in memory only: nothing (its letters are the runtime's).
#[derive(Debug, Default)]
pub struct TreeMemory;

/// A tree has no effects of its own: what it says, it says by letter.
#[derive(Debug)]
pub enum TreeEffect {}

impl Behaviour for TreeEntity {
    type Id = String;
    type Input = TreeInput;
    type Memory = TreeMemory;
    type Effect = TreeEffect;
    type Start = ();

    const ENTITY: EntityKind = EntityKind::Tree;

    fn address(root: &String) -> Address {
        Address::Tree(root.clone())
    }

    /// Nobody follows a tree: what it has to say goes to players' own streams.
    fn stream(root: &String) -> StreamId {
        StreamId::Player(format!("tree:{root}"))
    }

    fn has_stream() -> bool {
        false
    }

    fn activate(_cx: &mut Cx<'_>, _start: ()) -> Result<(), ActivationError> {
        Ok(())
    }

    fn decide(cx: &mut Cx<'_>, input: TreeInput) {
        match input {
            TreeInput::Decide {
                reward,
                approve,
                reply,
            } => {
                let decided = decide_reward(cx, reward, approve);
                cx.reply(reply, decided);
            }
        }
    }

    fn receive(cx: &mut Cx<'_>, letter: Letter, attachment: Option<Attachment>) {
        let Some(sender) = letter.from.player().map(str::to_owned) else {
            tracing::error!(tree = %cx.id, from = %letter.from, "a tree takes letters from sessions only");
            return;
        };
        match letter.body {
            Body::Attach { referee, suspect } => {
                attach_letter(cx, sender, referee, suspect, attachment)
            }
            Body::Activated => {
                if let Err(error) = activated(cx, sender) {
                    tracing::warn!(tree = %cx.id, %error, "an activation was not recorded");
                }
            }
            other => {
                tracing::error!(tree = %cx.id, body = other.name(), "a tree got a letter it does not take");
                metrics::counter!("playtree_mail_misdirected_total", "kind" => "tree").increment(1);
            }
        }
    }

    fn handed(cx: &mut Cx<'_>, hand_off: HandOff) {
        match hand_off {
            HandOff::Conversion {
                player,
                kind,
                key,
                reply,
            } => {
                let made = conversion(cx, player, &kind, key);
                cx.reply(reply, made);
            }
            HandOff::Stats { player, reply } => {
                let stats = cx.state().stats(&player);
                cx.reply(reply, Ok(ReplyBody::ReferralStats(stats)));
            }
            other => {
                let name = other.name();
                other.refuse(ErrorReply::new(
                    ErrorCode::Internal,
                    format!("a referral tree takes no {name} hand-off"),
                ));
            }
        }
    }

    fn on_deadline(cx: &mut Cx<'_>) {
        release_due(cx);
    }

    /// The first hold to end.
    fn next_deadline(_env: &Env, state: &TreeState, _memory: &TreeMemory) -> Option<u64> {
        state.holds.first().map(|(until_ms, _)| *until_ms)
    }

    fn is_activity(_input: &TreeInput) -> bool {
        true
    }

    fn may_passivate(state: &TreeState, _memory: &TreeMemory) -> bool {
        // A tree with rewards on hold stays to release them on time.
        state.holds.is_empty()
    }

    fn passivate_after_ms(config: &GameConfig) -> u64 {
        config.referral.passivate_after_ms
    }

    fn history_len(_config: &GameConfig) -> usize {
        0
    }

    fn snapshot(_cx: &Cx<'_>) -> Event {
        // Never sent: a tree has no followers.
        Event::PlayerSnapshot { balance: 0 }
    }

    fn keeps_follower(_state: &TreeState, _player: &str) -> bool {
        false
    }
}

/// Appends `event` to the partner event log in the commit of the decision's events
/// (after the first of them, so it cannot be refused).
fn log(cx: &mut Cx<'_>, event: LogEvent) {
    let appended =
        encode_value(&(cx.now_ms, event)).and_then(|record| cx.write(WriteOp::Append(record)));
    if let Err(error) = appended {
        tracing::error!(tree = %cx.id, %error, "event log entry not written");
    }
}

/// Decodes an event log entry's stored value.
pub fn decode_log(offset: u64, value: &[u8]) -> Result<LogEntry, crate::store::StoreError> {
    let (at_ms, event): (u64, LogEvent) = decode_value(|| format!("log entry {offset}"), value)?;
    Ok(LogEntry {
        offset,
        at_ms,
        event,
    })
}

/// Tells `player`, by letter, news for their stream.
fn tell(cx: &mut Cx<'_>, player: &str, news: Vec<PlayerNews>) {
    if let Err(error) = cx.send(Address::Session(player.to_owned()), Body::News(news)) {
        tracing::error!(tree = %cx.id, %error, "news was refused after its decision");
    }
}

/// Step 3 of a claim: `referee` is attached below `referrer` (the letter's sender), or
/// refused. Both hear by letter; the client who claimed is answered from here.
fn attach_letter(
    cx: &mut Cx<'_>,
    referrer: String,
    referee: String,
    suspect: bool,
    attachment: Option<Attachment>,
) {
    let root = cx.id.clone();
    let attached = attach(cx, &referrer, &referee, suspect);
    let outcome = match &attached {
        Ok(()) => "accepted",
        Err(_) => "refused",
    };
    cx.then(move || {
        metrics::counter!("playtree_referral_attachments_total", "outcome" => outcome).increment(1)
    });
    let (answer, result) = match attached {
        Ok(()) => (
            ClaimAnswer::Attached {
                referrer: referrer.clone(),
                root,
            },
            Ok(ReplyBody::ReferralClaimed {
                referrer: referrer.clone(),
            }),
        ),
        Err(error) => (ClaimAnswer::Refused(error.clone()), Err(error)),
    };
    let attached = result.is_ok();
    let told = cx
        .send(
            Address::Session(referee.clone()),
            Body::ClaimAnswered(answer),
        )
        .and_then(|()| {
            cx.send(
                Address::Session(referrer),
                Body::RefereeAnswered { referee, attached },
            )
        });
    if let Err(error) = told {
        // Refused before anything changed only if it was the first write: the letter
        // that asked is not taken, and comes again.
        tracing::error!(tree = %cx.id, %error, "a claim's answer was not sent");
    }
    if let Some(attachment) = attachment {
        cx.reply(attachment.into_reply(), result);
    }
}

/// `referee` joins below `referrer`, and the signup rewards and the welcome bonus are
/// paid.
fn attach(
    cx: &mut Cx<'_>,
    referrer: &str,
    referee: &str,
    suspect_source: bool,
) -> Result<(), ErrorReply> {
    let root = cx.id.clone();
    let players_max = cx.config().referral.tree_players_max;
    if claim::attach(cx.state(), &root, referrer, referee, players_max)? == Attach::Again {
        // Asked again: the same answer.
        return Ok(());
    }
    let state = cx.state();
    let at_ms = cx.now_ms;
    let first_referee = state
        .nodes
        .get(referrer)
        .is_none_or(|node| node.referees_by_level.is_empty());
    // A referrer's claims beyond the hourly limit pay nothing until a partner approves.
    let claims_max = cx.config().referral.claims_per_referrer_per_hour;
    // A suspect referrer's own referees are suspect too: flags are not escaped by
    // referring through the accounts that were flagged.
    let referrer_suspect = state.nodes.get(referrer).is_some_and(|node| node.suspect);
    let excess = referrer_suspect
        || suspect_source
        || claims_max > 0
            && state
                .nodes
                .get(referrer)
                .map_or(0, |node| node.claims.count_at(at_ms, state::HOUR_MS))
                >= claims_max;
    let mut events = Vec::new();
    if state.nodes.is_empty() {
        events.push(TreeEvent::Rooted {
            root: root.clone(),
            at_ms,
        });
    }
    events.push(TreeEvent::Attached {
        referrer: referrer.to_owned(),
        referee: referee.to_owned(),
        at_ms,
        suspect: excess,
        claims_kept: claims_max,
    });
    // The referrer's place on the leaderboard moves in the same commit.
    let before = cx.state().nodes.get(referrer).map(|node| {
        (
            node.referees_by_level.first().copied().unwrap_or(0),
            node.last_referee_ms,
        )
    });
    cx.emit_all(events).map_err(|error| refusal(&error))?;
    if let Some((referees, reached_ms)) = before
        && referees > 0
    {
        let old = leaderboard::key(referrer, referees, reached_ms);
        if let Err(error) = cx.write(WriteOp::Delete(old)) {
            tracing::error!(tree = %cx.id, %error, "leaderboard entry not moved");
        }
    }
    let referees = before.map_or(0, |(referees, _)| referees) + 1;
    let new = leaderboard::key(referrer, referees, at_ms);
    if let Err(error) = cx.write(WriteOp::Put(new, Vec::new())) {
        tracing::error!(tree = %cx.id, %error, "leaderboard entry not written");
    }
    log(
        cx,
        LogEvent::ReferralClaimed {
            tree: root,
            referrer: referrer.to_owned(),
            referee: referee.to_owned(),
        },
    );
    cx.then(move || {
        if first_referee {
            count_funnel(&REFERRERS, "referrer");
        }
        count_funnel(&REFEREES, "referee");
    });
    let config = cx.config().referral.clone();
    for (index, ancestor) in ancestors(cx.state(), referee).into_iter().enumerate() {
        let level = index as u32 + 1;
        let amount = config.signup_rewards.get(index).copied().unwrap_or(0);
        let joined = PlayerNews::FriendJoined {
            friend: referee.to_owned(),
            level,
        };
        // One letter per ancestor: the news rides with the reward's credit.
        let made = Made::new(referee, level, RewardTrigger::Signup, amount);
        reward(cx, ancestor, made, excess, Some(joined))?;
    }
    let welcome = Made::new(referee, 0, RewardTrigger::Welcome, config.welcome_bonus);
    reward(cx, referee.to_owned(), welcome, excess, None)?;
    if excess {
        cx.then(|| metrics::counter!("playtree_referral_claims_flagged_total").increment(1));
    }
    Ok(())
}

/// `player` finished a first game: the activation rewards are paid up the tree once.
fn activated(cx: &mut Cx<'_>, player: String) -> Result<(), ErrorReply> {
    let Some(node) = cx.state().nodes.get(&player) else {
        return Err(ErrorReply::new(
            ErrorCode::Internal,
            format!("{player} is not in the referral tree of {}", cx.id),
        ));
    };
    if node.activated {
        return Ok(());
    }
    let suspect = node.suspect;
    cx.emit(TreeEvent::Activated {
        player: player.clone(),
    })
    .map_err(|error| refusal(&error))?;
    let tree = cx.id.clone();
    log(
        cx,
        LogEvent::GameFinished {
            tree,
            player: player.clone(),
        },
    );
    cx.then(|| count_funnel(&ACTIVATED, "activated"));
    let amounts = cx.config().referral.activation_rewards.clone();
    for (index, ancestor) in ancestors(cx.state(), &player).into_iter().enumerate() {
        let amount = amounts.get(index).copied().unwrap_or(0);
        let made = Made::new(&player, index as u32 + 1, RewardTrigger::Activation, amount);
        reward(cx, ancestor, made, suspect, None)?;
    }
    Ok(())
}

/// What a reward is for.
struct Made<'a> {
    friend: &'a str,
    level: u32,
    trigger: RewardTrigger,
    amount: u64,
}

impl<'a> Made<'a> {
    fn new(friend: &'a str, level: u32, trigger: RewardTrigger, amount: u64) -> Self {
        Made {
            friend,
            level,
            trigger,
            amount,
        }
    }
}

/// Rewards `beneficiary` (nothing for 0 coins): flagged if `flag` or past the player's
/// daily rewards limit, held for `referral.hold_ms` if set, else credited at once (a
/// credit by letter, with its news); the beneficiary hears of it either way, `first`
/// (news of what earned it) before.
fn reward(
    cx: &mut Cx<'_>,
    beneficiary: String,
    made: Made<'_>,
    flag: bool,
    first: Option<PlayerNews>,
) -> Result<(), ErrorReply> {
    let Made {
        friend,
        level,
        trigger,
        amount,
    } = made;
    if amount == 0 {
        if let Some(first) = first {
            tell(cx, &beneficiary, vec![first]);
        }
        return Ok(());
    }
    let config = &cx.config().referral;
    let (hold_ms, rewards_max) = (config.hold_ms, config.rewards_per_player_per_day);
    let number = cx.state().next_reward();
    let at_ms = cx.now_ms;
    let over_daily = rewards_max > 0
        && cx
            .state()
            .nodes
            .get(&beneficiary)
            .map_or(0, |node| node.rewards.count_at(at_ms, state::DAY_MS))
            >= rewards_max;
    let (outcome, state) = if flag || over_daily {
        (RewardOutcome::Flagged, RewardState::Flagged)
    } else if hold_ms == 0 {
        (RewardOutcome::Credited, RewardState::Credited)
    } else {
        let until_ms = at_ms.saturating_add(hold_ms);
        (RewardOutcome::Pending { until_ms }, RewardState::Pending)
    };
    cx.emit(TreeEvent::Rewarded {
        reward: number,
        beneficiary: beneficiary.clone(),
        friend: friend.to_owned(),
        level,
        trigger,
        amount,
        at_ms,
        outcome,
        rewards_kept: rewards_max,
    })
    .map_err(|error| refusal(&error))?;
    count_reward(cx, trigger, state, amount);
    let held = Reward {
        beneficiary,
        friend: friend.to_owned(),
        level,
        trigger,
        amount,
        state,
        at_ms,
    };
    announce(cx, number, &held, state, first);
    Ok(())
}

/// Tells the beneficiary (by letter: a credit with its news when `state` pays, news
/// alone otherwise; `first` before) and the event log where reward `number` stands.
fn announce(
    cx: &mut Cx<'_>,
    number: u64,
    reward: &Reward,
    state: RewardState,
    first: Option<PlayerNews>,
) {
    let news = RewardNews {
        tree: cx.id.clone(),
        reward: number,
        friend: reward.friend.clone(),
        level: reward.level,
        trigger: reward.trigger,
        amount: reward.amount,
        state,
    };
    log(
        cx,
        LogEvent::Reward {
            beneficiary: reward.beneficiary.clone(),
            reward: news.wire(),
        },
    );
    let news: Vec<PlayerNews> = first
        .into_iter()
        .chain([PlayerNews::Reward(news)])
        .collect();
    if state != RewardState::Credited {
        return tell(cx, &reward.beneficiary, news);
    }
    let credit = Credit {
        amount: reward.amount,
        reason: format!(
            "referral: {} ({:?}, level {})",
            reward.friend, reward.trigger, reward.level
        ),
        spin: None,
        news,
    };
    if let Err(error) = cx.send(
        Address::Session(reward.beneficiary.clone()),
        Body::Credit(credit),
    ) {
        tracing::error!(tree = %cx.id, %error, "a reward's credit was refused after its decision");
    }
}

/// A partner approves (credits now) or voids (never pays) a held or flagged reward.
/// Asking again gets the same answer; the opposite decision is refused.
fn decide_reward(cx: &mut Cx<'_>, number: u64, approve: bool) -> Result<RewardState, ErrorReply> {
    let wanted = if approve {
        RewardState::Credited
    } else {
        RewardState::Voided
    };
    if let Some(decided) = cx.state().decided.get(&number) {
        return if *decided == wanted {
            Ok(wanted)
        } else {
            Err(ErrorReply::new(
                ErrorCode::RewardNotHeld,
                format!("reward {number} was {} already", state_name(*decided)),
            ))
        };
    }
    let Some(held) = cx.state().held.get(&number).cloned() else {
        return Err(if number <= cx.state().rewards_made {
            ErrorReply::new(
                ErrorCode::RewardNotHeld,
                format!(
                    "reward {number} is not held: it was credited when it was made or its \
                     hold passed, or decided longer ago than this server remembers decisions"
                ),
            )
        } else {
            ErrorReply::new(
                ErrorCode::UnknownReward,
                format!("the referral tree of {} has no reward {number}", cx.id),
            )
        });
    };
    answers_room(
        cx,
        "decisions",
        cx.state().decided.is_full_at(cx.now_ms, answers_kept(cx)),
    )?;
    let at_ms = cx.now_ms;
    let keep = answers_kept(cx);
    cx.emit(TreeEvent::Decided {
        reward: number,
        beneficiary: held.beneficiary.clone(),
        approved: approve,
        at_ms,
        keep,
    })
    .map_err(|error| refusal(&error))?;
    count_reward(cx, held.trigger, wanted, held.amount);
    announce(cx, number, &held, wanted, None);
    Ok(wanted)
}

/// How long, and how many, answers to partners this tree keeps.
fn answers_kept(cx: &Cx<'_>) -> state::Keep {
    let config = &cx.config().referral;
    state::Keep {
        span_ms: config.partner_answers_kept_ms,
        max: config.partner_answers_max,
    }
}

/// Refuses a partner request whose answer the tree could keep only by forgetting one
/// given within `referral.partner_answers_kept_ms` (which would let a repeated
/// conversion key pay twice): the partner retries later, or the operator raises
/// `referral.partner_answers_max`.
fn answers_room(cx: &Cx<'_>, what: &str, full: bool) -> Result<(), ErrorReply> {
    if !full {
        return Ok(());
    }
    let config = &cx.config().referral;
    metrics::counter!("playtree_referral_partner_answers_full_total").increment(1);
    tracing::warn!(tree = %cx.id, what, "a referral tree's partner answers are full");
    Err(ErrorReply::new(
        ErrorCode::RateLimited,
        format!(
            "the referral tree of {} keeps {} {what} from the last {} ms \
             (referral.partner_answers_max) and may not forget one sooner; retry later",
            cx.id, config.partner_answers_max, config.partner_answers_kept_ms
        ),
    ))
}

/// A partner's conversion report for `player`: the kind's rewards up the tree, once per
/// idempotency key. Answers how many rewards it made.
fn conversion(cx: &mut Cx<'_>, player: String, kind: &str, key: String) -> Result<u32, ErrorReply> {
    if let Some(rewards) = cx
        .state()
        .conversions
        .get(&state::conversion_key(&player, &key))
    {
        return Ok(*rewards);
    }
    answers_room(
        cx,
        "conversion keys",
        cx.state()
            .conversions
            .is_full_at(cx.now_ms, answers_kept(cx)),
    )?;
    let Some(amounts) = cx.config().referral.conversion_rewards.get(kind).cloned() else {
        return Err(ErrorReply::new(
            ErrorCode::UnknownConversionKind,
            format!("no rewards are configured for conversions of kind `{kind}`"),
        ));
    };
    let Some(suspect) = cx.state().nodes.get(&player).map(|node| node.suspect) else {
        return Err(ErrorReply::new(
            ErrorCode::Internal,
            format!("{player} is not in the referral tree of {}", cx.id),
        ));
    };
    let paid: Vec<(String, u64)> = ancestors(cx.state(), &player)
        .into_iter()
        .zip(amounts)
        .filter(|(_, amount)| *amount > 0)
        .collect();
    let rewards = paid.len() as u32;
    let at_ms = cx.now_ms;
    let keep = answers_kept(cx);
    cx.emit(TreeEvent::ConversionRecorded {
        player: player.clone(),
        key: key.clone(),
        rewards,
        at_ms,
        keep,
    })
    .map_err(|error| refusal(&error))?;
    let tree = cx.id.clone();
    log(
        cx,
        LogEvent::ConversionReported {
            tree,
            player: player.clone(),
            kind: kind.to_owned(),
            idempotency_key: key,
            rewards,
        },
    );
    cx.then(|| {
        metrics::counter!("playtree_referral_funnel_total", "step" => "conversion").increment(1)
    });
    for (index, (ancestor, amount)) in paid.into_iter().enumerate() {
        let made = Made::new(&player, index as u32 + 1, RewardTrigger::Conversion, amount);
        reward(cx, ancestor, made, suspect, None)?;
    }
    Ok(rewards)
}

fn count_reward(cx: &mut Cx<'_>, trigger: RewardTrigger, state: RewardState, amount: u64) {
    let (trigger, state) = (trigger_name(trigger), state_name(state));
    cx.then(move || {
        metrics::counter!("playtree_referral_rewards_total", "trigger" => trigger, "state" => state)
            .increment(1);
        metrics::counter!("playtree_referral_reward_coins_total", "trigger" => trigger, "state" => state)
            .increment(amount);
    });
}

/// Credits every reward whose hold has ended.
fn release_due(cx: &mut Cx<'_>) {
    let now_ms = cx.now_ms;
    let due: Vec<(u64, u64)> = cx
        .state()
        .holds
        .iter()
        .take_while(|(until_ms, _)| *until_ms <= now_ms)
        .copied()
        .collect();
    for (until_ms, number) in due {
        let Some(held) = cx.state().held.get(&number).cloned() else {
            continue;
        };
        if let Err(error) = cx.emit(TreeEvent::Released {
            reward: number,
            until_ms,
            beneficiary: held.beneficiary.clone(),
        }) {
            // Refused before anything changed: the next deadline tries again (with
            // backoff, the runtime's).
            tracing::warn!(tree = %cx.id, reward = number, %error, "held reward not released yet");
            return;
        }
        count_reward(cx, held.trigger, RewardState::Credited, held.amount);
        announce(cx, number, &held, RewardState::Credited, None);
    }
}

pub fn state_name(state: RewardState) -> &'static str {
    match state {
        RewardState::Pending => "pending",
        RewardState::Credited => "credited",
        RewardState::Flagged => "flagged",
        RewardState::Voided => "voided",
    }
}

pub fn trigger_name(trigger: RewardTrigger) -> &'static str {
    match trigger {
        RewardTrigger::Signup => "signup",
        RewardTrigger::Welcome => "welcome",
        RewardTrigger::Activation => "activation",
        RewardTrigger::Conversion => "conversion",
    }
}

/// The leaderboard of referrers is an index kept in the store beside the trees: one key
/// per referrer, `'r'`, then the referee count inverted and the time it was reached
/// (both big-endian), then the player, so that a scan from the start reads the best
/// first (among equal counts, whoever reached it first). Trees move a referrer's key in
/// the commit of the referee that changes it.
pub mod leaderboard {
    use crate::store::{Store, StoreError};
    use playtree_protocol::LeaderboardEntry;

    pub fn key(player: &str, referees: u64, reached_ms: u64) -> Vec<u8> {
        let mut key = vec![b'r'];
        key.extend_from_slice(&(u64::MAX - referees).to_be_bytes());
        key.extend_from_slice(&reached_ms.to_be_bytes());
        key.extend_from_slice(player.as_bytes());
        key
    }

    /// The top `limit` referrers.
    pub async fn top(store: &Store, limit: usize) -> Result<Vec<LeaderboardEntry>, StoreError> {
        Ok(store
            .scan_index(b"r", limit)
            .await?
            .into_iter()
            .filter_map(|key| {
                let inverted: [u8; 8] = key.get(1..9)?.try_into().ok()?;
                let player = String::from_utf8(key.get(17..)?.to_vec()).ok()?;
                Some(LeaderboardEntry {
                    player,
                    referees: u64::MAX - u64::from_be_bytes(inverted),
                })
            })
            .collect())
    }
}
