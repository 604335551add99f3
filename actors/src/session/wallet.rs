//! The wallet and the wheels: a spin drawn here and sent to its room by letter, the
//! room's credit taken (the only way coins reach a wallet), the player's stream
//! published from what the state keeps of it, and seed rotation.

use super::state::SessionEvent;
use super::{Cx, Keyed, key_answered, logic, member_of, take_key};
use crate::mail::{Address, Body, Credit, PlayerNews, SpinKey};
use crate::runtime::refusal;
use crate::store::DeadLetter;
use playtree_protocol::fairness::{self, commitment};
use playtree_protocol::{
    ErrorCode, ErrorReply, ReplyBody, RoomId, RoomKind, SeedReveal, SpinOutcome,
};

/// Draws a spin and sends it to its room to be paid; the client's answer leaves when
/// the room's credit comes back.
pub fn spin(
    cx: &mut Cx<'_>,
    room: RoomId,
    client_seed: String,
    keyed: Option<Keyed>,
    reply: crate::mail::RequestReply,
) {
    match draw(cx, room, &client_seed, keyed) {
        Ok(key) => {
            cx.memory.spin_replies.insert(key, reply);
        }
        Err(error) => super::answer_now(cx, keyed, reply, Err(error)),
    }
}

fn draw(
    cx: &mut Cx<'_>,
    room: RoomId,
    client_seed: &str,
    keyed: Option<Keyed>,
) -> Result<SpinKey, ErrorReply> {
    let wheel_id = member_of(cx.state(), room, RoomKind::Wheel)?
        .variant
        .clone();
    let wheel = cx
        .config()
        .wheel(&wheel_id)
        .cloned()
        .ok_or_else(|| unknown_wheel(cx, &wheel_id))?;
    let waiting = cx
        .state()
        .pending_spins
        .keys()
        .filter(|(wheel, _)| *wheel == wheel_id)
        .count();
    let waiting_max = cx.config().session.pending_spins_max;
    if waiting >= waiting_max {
        metrics::counter!("playtree_rate_limited_total", "limit" => "pending_spins").increment(1);
        return Err(ErrorReply::new(
            ErrorCode::RateLimited,
            format!(
                "{waiting_max} of your spins of `{wheel_id}` are still being paid; wait for one"
            ),
        ));
    }
    let player = cx.id.clone();
    let (mut spin, day) = logic::draw_spin(
        cx.state(),
        &cx.env.seeds,
        &player,
        &wheel,
        room,
        client_seed,
        cx.now_ms,
    )?;
    spin.request_key = keyed.map(|keyed| keyed.key);
    let key = spin.key();
    cx.emit(SessionEvent::SpinDrawn {
        spin: spin.clone(),
        day,
    })
    .map_err(|error| refusal(&error))?;
    take_key(cx, keyed)?;
    if let Err(error) = cx.send(Address::Room(room), Body::Settle(spin)) {
        // The first write went through, so this cannot be refused.
        tracing::error!(player = %cx.id, %error, "a drawn spin's letter was refused after its draw");
    }
    cx.then(move || metrics::counter!("playtree_spins_total", "wheel" => wheel_id).increment(1));
    Ok(key)
}

fn unknown_wheel(cx: &Cx<'_>, name: &str) -> ErrorReply {
    let known: Vec<&str> = cx.config().wheels.iter().map(|w| w.id.as_str()).collect();
    ErrorReply::new(
        ErrorCode::UnknownVariant,
        format!(
            "there is no wheel `{name}`; this server has: {}",
            known.join(", ")
        ),
    )
}

/// Takes a credit: the wallet and the player's stream; for a spin's prize, the answer
/// to the client who spun; a first paid spin activates the player.
pub fn credit(cx: &mut Cx<'_>, grant_id: String, credit: Credit) {
    let Credit {
        amount,
        reason,
        spin,
        news,
    } = credit;
    let drawn = spin
        .as_ref()
        .and_then(|paid| cx.state().pending_spins.get(&paid.key).cloned());
    let seq_before = cx.state().stream.seq;
    let kept = cx.config().session.stream_history_len as u32;
    if let Err(error) = cx.emit(SessionEvent::Credited {
        grant_id,
        amount,
        reason,
        settles: spin.as_ref().map(|paid| paid.key.clone()),
        news,
        kept,
    }) {
        // The runtime recorded the letter first, so this cannot be refused.
        tracing::error!(player = %cx.id, %error, "a credit was refused after its letter was taken");
        return;
    }
    publish_since(cx, seq_before);
    cx.then(move || {
        // Counted once durable, like everything the credit implies.
        metrics::counter!("playtree_rewards_credited_total").increment(1);
        metrics::counter!("playtree_reward_coins_credited_total").increment(amount);
    });
    let (Some(paid), Some(drawn)) = (spin, drawn) else {
        return;
    };
    // A paid spin is a finished game: the first one activates the player.
    super::referral::game_finished(cx);
    let spins_left_today = cx
        .config()
        .wheel(&drawn.wheel)
        .map_or(0, |wheel| logic::spins_left(cx.state(), wheel, cx.now_ms));
    let outcome = Ok(ReplyBody::Spun(SpinOutcome {
        room: drawn.room,
        wheel: drawn.wheel,
        nonce: drawn.nonce,
        client_seed: drawn.client_seed,
        commitment: drawn.commitment,
        segment: drawn.segment,
        label: paid.label,
        prize: amount,
        inventory_exhausted: paid.inventory_exhausted,
        balance: cx.state().balance,
        spins_left_today,
    }));
    answer_spin(cx, &paid.key, drawn.request_key, outcome);
}

/// The client who drew the spin `key` gets `outcome` (and its key keeps it).
fn answer_spin(
    cx: &mut Cx<'_>,
    key: &SpinKey,
    request_key: Option<u64>,
    outcome: Result<ReplyBody, ErrorReply>,
) {
    if let Some(request_key) = request_key {
        key_answered(cx, request_key, &outcome);
    }
    if let Some(reply) = cx.memory.spin_replies.remove(key) {
        cx.reply(reply, outcome);
    }
}

/// The room can never pay the spin: it is abandoned, with a dead letter in the same
/// commit, and whoever waits for it is told.
pub fn spin_refused(cx: &mut Cx<'_>, key: &SpinKey, reason: String) {
    let Some(drawn) = cx.state().pending_spins.get(key).cloned() else {
        return;
    };
    let letter = DeadLetter {
        kind: "spin".into(),
        id: cx.id.clone(),
        what: format!(
            "spin {} of wheel {} in room {} (segment {})",
            drawn.nonce, drawn.wheel, drawn.room, drawn.segment
        ),
        reason: reason.clone(),
    };
    let recorded = cx
        .dead_letter(letter)
        .and_then(|()| cx.emit(SessionEvent::SpinAbandoned { spin: key.clone() }));
    if let Err(error) = recorded {
        tracing::error!(player = %cx.id, %error, "an abandoned spin was not recorded");
        return;
    }
    let outcome = Err(ErrorReply::new(
        ErrorCode::Internal,
        format!(
            "spin {} cannot be paid ({reason}); it is recorded for an operator",
            drawn.nonce
        ),
    ));
    answer_spin(cx, key, drawn.request_key, outcome);
}

/// News from the player's tree: kept on the player's stream and published.
pub fn news(cx: &mut Cx<'_>, news: Vec<PlayerNews>) {
    let seq_before = cx.state().stream.seq;
    let kept = cx.config().session.stream_history_len as u32;
    if cx.emit(SessionEvent::NewsReceived { news, kept }).is_ok() {
        publish_since(cx, seq_before);
    }
}

/// Publishes the stream events the state kept after `seq_before`: the in-memory stream
/// follows the durable one event for event.
fn publish_since(cx: &mut Cx<'_>, seq_before: u64) {
    let events: Vec<_> = cx
        .state()
        .stream
        .recent
        .iter()
        .filter(|(seq, _)| *seq > seq_before)
        .map(|(_, item)| item.event())
        .collect();
    for event in events {
        cx.publish(event);
    }
    // Invariant: the stream clients follow is the one the state keeps.
    assert_eq!(
        cx.stream.seq(),
        cx.state().stream.seq,
        "the player stream went out of step with its durable record"
    );
}

/// Reveals the seed of `wheel` in use and commits the next one.
pub fn rotate_seed(cx: &mut Cx<'_>, wheel: String) -> Result<ReplyBody, ErrorReply> {
    if cx.config().wheel(&wheel).is_none() {
        return Err(unknown_wheel(cx, &wheel));
    }
    let player = cx.id.clone();
    let current = cx.state().wheel(&wheel);
    let revealed_seed = cx
        .env
        .seeds
        .server_seed(&player, &wheel, current.generation);
    cx.emit(SessionEvent::SeedRotated {
        wheel: wheel.clone(),
    })
    .map_err(|error| refusal(&error))?;
    let next = cx
        .env
        .seeds
        .server_seed(&player, &wheel, current.generation + 1);
    Ok(ReplyBody::SeedRotated(SeedReveal {
        wheel,
        revealed_seed,
        revealed_commitment: fairness::commitment(&revealed_seed),
        next_commitment: commitment(&next),
        next_nonce: current.next_nonce,
    }))
}
