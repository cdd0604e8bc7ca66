//! Decisions on one Redis key go to Redis in rounds: a decision that finds
//! no round of its key in flight leads one at once; those that arrive
//! while a round is in flight wait, and the next round takes them all (up
//! to [`MAX_ROUND`]) in one script call, which decides them one after the
//! other inside Redis. The answers are those of as many separate calls, in
//! one round trip: a quiet key pays no delay, a busy one costs Redis and
//! the node one call per round instead of one per request.
//!
//! A round's leader is one of the waiting requests: it sends the call (in a
//! task of its own, so that the answers reach the followers even if the
//! leader's client goes away meanwhile), hands the answers out, and passes
//! the lead to the first waiting request with the others (those still
//! there) as its followers. A round dropped unfinished (the runtime
//! stopping) or a lead dropped unread passes it on the same way, so a key
//! is never left waiting. A decision that finds the next round full goes
//! alone at once: none waits longer than the round in flight and its own.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::mem;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use super::algorithm::Decision;

/// Most decisions one round takes; the rest wait for the next one.
pub const MAX_ROUND: usize = 128;

/// What a waiting decision is told.
pub enum Turn {
    /// Its answer.
    Decided(Result<Decision, String>),
    /// To lead the next round. Dropped unread (the request went away just
    /// then), the round passes the lead on.
    Lead(Round),
}

pub type Waiter = oneshot::Sender<Turn>;

/// What a decision does on arrival.
pub enum Joined {
    /// Leads a round, for itself alone.
    Lead(Round),
    /// Waits for its turn.
    Wait(oneshot::Receiver<Turn>),
}

/// The keys with a round in flight, and the decisions waiting on each.
#[derive(Default)]
pub struct Rounds {
    waiting: Mutex<HashMap<Box<str>, Vec<Waiter>>>,
}

impl Rounds {
    /// Joins `key`'s rounds: leads one when none is in flight, else waits.
    pub fn join(self: &Arc<Self>, key: &str) -> Joined {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        match waiting.get_mut(key) {
            // A full next round: this one goes alone, at once, as every
            // decision did before rounds, so no decision waits for more
            // than the round in flight and its own.
            Some(queue) if queue.len() >= MAX_ROUND - 1 => Joined::Lead(Round { rounds: None, key: key.into(), followers: Vec::new() }),
            Some(queue) => {
                let (sender, receiver) = oneshot::channel();
                queue.push(sender);
                Joined::Wait(receiver)
            }
            None => {
                waiting.insert(key.into(), Vec::new());
                Joined::Lead(Round { rounds: Some(Arc::clone(self)), key: key.into(), followers: Vec::new() })
            }
        }
    }

    /// Ends a round of `key`: the lead goes to the first of `followers`
    /// still waiting (a round that never got its answers), else to the
    /// first queued decision, with the others (up to [`MAX_ROUND`] in all)
    /// as its followers; with nobody waiting the key has no round in flight.
    fn pass_lead(self: &Arc<Self>, key: Box<str>, mut followers: Vec<Waiter>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if followers.is_empty() {
                let Entry::Occupied(mut queue) = waiting.entry(key.clone()) else { return };
                if queue.get().is_empty() {
                    queue.remove();
                    return;
                }
                let queue = queue.get_mut();
                let rest = queue.split_off(queue.len().min(MAX_ROUND));
                followers = mem::replace(queue, rest);
                // Requests that went away while they waited are not decided.
                followers.retain(|waiter| !waiter.is_closed());
                if followers.is_empty() {
                    continue;
                }
            }
            let leader = followers.remove(0);
            let round = Round { rounds: Some(Arc::clone(self)), key: key.clone(), followers };
            match leader.send(Turn::Lead(round)) {
                Ok(()) => return,
                // That request is gone: the next one leads.
                Err(Turn::Lead(mut round)) => followers = round.defuse(),
                Err(Turn::Decided(_)) => followers = Vec::new(),
            }
        }
    }
}

/// A round of one key: its leader holds it while the script call is in
/// flight. Dropped, finished or not, it passes the lead on (with its
/// followers when they got no answer).
pub struct Round {
    /// `None` once its lead was passed on by other means.
    rounds: Option<Arc<Rounds>>,
    key: Box<str>,
    followers: Vec<Waiter>,
}

impl Round {
    /// Decisions the round makes: the leader's and its followers'.
    pub fn decisions(&self) -> usize {
        1 + self.followers.len()
    }

    /// Hands out `answers` (the leader's first, then the followers' in
    /// order; an error goes to all), passes the lead on, and gives the
    /// leader its answer.
    pub fn finish(mut self, answers: Result<Vec<Decision>, String>) -> Result<Decision, String> {
        let followers = mem::take(&mut self.followers);
        match answers {
            Ok(decisions) => {
                let mut decisions = decisions.into_iter();
                let own = decisions.next().ok_or_else(|| "no decision in the answer".to_owned());
                for (follower, decision) in followers.into_iter().zip(decisions) {
                    // A follower that went away needs no answer.
                    let _ = follower.send(Turn::Decided(Ok(decision)));
                }
                own
            }
            Err(reason) => {
                for follower in followers {
                    let _ = follower.send(Turn::Decided(Err(reason.clone())));
                }
                Err(reason)
            }
        }
    }

    /// Its followers, the round no longer passing the lead when dropped.
    fn defuse(&mut self) -> Vec<Waiter> {
        self.rounds = None;
        mem::take(&mut self.followers)
    }
}

impl Drop for Round {
    fn drop(&mut self) {
        if let Some(rounds) = self.rounds.take() {
            rounds.pass_lead(mem::take(&mut self.key), mem::take(&mut self.followers));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(remaining: u64) -> Decision {
        Decision { allowed: true, limit: 10, remaining, reset: 1.0, retry_after: 0.0, delay: 0.0 }
    }

    fn lead(joined: Joined) -> Round {
        match joined {
            Joined::Lead(round) => round,
            Joined::Wait(_) => panic!("expected to lead"),
        }
    }

    fn wait(joined: Joined) -> oneshot::Receiver<Turn> {
        match joined {
            Joined::Wait(receiver) => receiver,
            Joined::Lead(_) => panic!("expected to wait"),
        }
    }

    /// The round a waiter was handed, with how many followers it has.
    fn led(receiver: &mut oneshot::Receiver<Turn>) -> Round {
        match receiver.try_recv() {
            Ok(Turn::Lead(round)) => round,
            _ => panic!("expected the lead"),
        }
    }

    #[test]
    fn the_first_decision_leads_and_the_next_round_takes_everyone_who_waited() {
        let rounds = Arc::new(Rounds::default());
        let round = lead(rounds.join("k"));
        let _other = lead(rounds.join("other")); // keys are apart
        let mut first = wait(rounds.join("k"));
        let mut second = wait(rounds.join("k"));
        assert_eq!(round.finish(Ok(vec![decision(9)])), Ok(decision(9)));
        let round = led(&mut first);
        assert_eq!(round.decisions(), 2, "the first waiter leads, the second follows");
        assert!(second.try_recv().is_err(), "a follower is told nothing before the answer");
        assert_eq!(round.finish(Ok(vec![decision(8), decision(7)])), Ok(decision(8)));
        assert!(matches!(second.try_recv(), Ok(Turn::Decided(Ok(d))) if d == decision(7)));
        let _again = lead(rounds.join("k")); // nobody waited: the key was free again
    }

    #[test]
    fn a_lead_dropped_mid_round_or_unread_goes_to_a_request_still_waiting() {
        let rounds = Arc::new(Rounds::default());
        let round = lead(rounds.join("k"));
        let gone = wait(rounds.join("k"));
        let mut next = wait(rounds.join("k"));
        let mut last = wait(rounds.join("k"));
        drop(gone);
        drop(round); // the leader's request went away mid-round
        let round = led(&mut next);
        assert_eq!(round.decisions(), 2, "the waiter that went away was passed over");
        drop(round); // and this one too, its follower unanswered
        let round = led(&mut last);
        assert_eq!(round.decisions(), 1);
        let queued = wait(rounds.join("k"));
        let mut after = wait(rounds.join("k"));
        drop(round); // the lead goes to `queued`, with `after` following
        drop(queued); // handed the lead, but gone before reading it
        let round = led(&mut after);
        assert_eq!(round.decisions(), 1, "the unread round passed the lead on");
        drop(round);
        let _free = lead(rounds.join("k")); // nobody waits: the key is free
    }

    #[test]
    fn an_error_reaches_every_follower_and_a_full_round_sends_newcomers_alone() {
        let rounds = Arc::new(Rounds::default());
        let round = lead(rounds.join("k"));
        let mut receivers: Vec<_> = (0..MAX_ROUND - 1).map(|_| wait(rounds.join("k"))).collect();
        let alone = lead(rounds.join("k"));
        assert_eq!(alone.decisions(), 1, "the next round is full: this one goes at once, by itself");
        assert_eq!(alone.finish(Ok(vec![decision(3)])), Ok(decision(3)));
        assert!(round.finish(Err("down".to_owned())).is_err());
        let round = led(&mut receivers[0]);
        assert_eq!(round.decisions(), MAX_ROUND - 1, "everyone who waited");
        let next = wait(rounds.join("k"));
        assert!(round.finish(Err("down".to_owned())).is_err());
        for receiver in &mut receivers[1..] {
            assert!(matches!(receiver.try_recv(), Ok(Turn::Decided(Err(reason))) if reason == "down"));
        }
        drop(next); // handed the lead, but gone before reading it: the key is free again
        let _free = lead(rounds.join("k"));
    }
}
