//! Leadership changes under load: a stopping leader hands over, a crashed one is replaced,
//! and cold pulls on the other members barely notice. A stall is how much longer the slowest
//! pull across the event took than the median pull just before it, on the same member.

use std::time::Duration;

use super::common::*;

/// Fresh blobs of `len` bytes.
fn pool(n: u64, len: usize, seed: u64) -> Vec<Blob> {
    (0..n).map(|i| blob(len, seed + i)).collect()
}

/// Cold pulls from `base` for about a second with nothing happening.
async fn baseline(base: &str, digests: &[String]) -> Pulls {
    cold_pulls(
        base.to_string(),
        digests.to_vec(),
        tokio::time::sleep(Duration::from_millis(800)),
        Duration::ZERO,
    )
    .await
}

/// A leader stopped gracefully (SIGTERM, as every rolling restart does) hands leadership to
/// its most up-to-date voter before it leaves: cold pulls on the other members go on with no
/// stall worth the name (an election without the handoff took 3.5-4 s: lease plus timeout).
#[tokio::test]
async fn a_stopping_leader_hands_over_and_cold_pulls_do_not_stall() {
    let blobs = pool(300, 256 * 1024, 900);
    let refs: Vec<&Blob> = blobs.iter().collect();
    let mut s = setup(&refs, None).await;
    let leader = s.cluster.leader().expect("a leader");
    let survivor = (leader + 1) % 3;
    let base = s.cluster.members[survivor].url();
    let digests: Vec<String> = blobs.iter().map(|b| b.digest.clone()).collect();
    let before = baseline(&base, &digests[..100]).await;
    let stopping = std::time::Instant::now();
    let cluster = &mut s.cluster;
    let across = cold_pulls(
        base,
        digests[100..].to_vec(),
        async {
            cluster.stop(leader).await.unwrap();
        },
        Duration::from_millis(1500),
    )
    .await;
    let stall = across.stall_over(&before);
    eprintln!(
        "cold pulls: median {:?} before; slowest {:?} over {} pulls across the leader's stop ({:?}): stall {stall:?}",
        before.median,
        across.slowest,
        across.count,
        stopping.elapsed()
    );
    if std::env::var_os("WHARF_TEST_DUMP").is_some() {
        for i in 0..3 {
            eprintln!(
                "=== member {i}{}\n{}",
                if i == leader { " (leader)" } else { "" },
                s.cluster.full_log(i)
            );
        }
    }
    let new_leader = s.cluster.leader();
    assert!(
        new_leader.is_some_and(|l| l != leader),
        "no new leader; the old leader's log:\n{}\nthe survivor's:\n{}",
        s.cluster.log(leader),
        s.cluster.log(survivor)
    );
    assert!(
        stall < Duration::from_millis(500),
        "a cold pull stalled {stall:?} while the leader stopped; the leader's log:\n{}\nthe survivor's:\n{}",
        s.cluster.log(leader),
        s.cluster.log(survivor)
    );
}

/// A crashed leader (SIGKILL: no handoff) is replaced within 10–12 heartbeats of its last
/// one: cold pulls on the other members stall well under a second (3.5–4 s with the former
/// 250 ms heartbeat and 4–8 heartbeat timeouts).
#[tokio::test]
async fn a_crashed_leader_is_replaced_within_a_second() {
    let blobs = pool(300, 256 * 1024, 2000);
    let refs: Vec<&Blob> = blobs.iter().collect();
    let mut s = setup(&refs, None).await;
    let leader = s.cluster.leader().expect("a leader");
    let survivor = (leader + 1) % 3;
    let base = s.cluster.members[survivor].url();
    let digests: Vec<String> = blobs.iter().map(|b| b.digest.clone()).collect();
    let before = baseline(&base, &digests[..100]).await;
    let cluster = &mut s.cluster;
    let across = cold_pulls(
        base,
        digests[100..].to_vec(),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            cluster.kill(leader);
        },
        Duration::from_millis(2500),
    )
    .await;
    let stall = across.stall_over(&before);
    eprintln!(
        "cold pulls: median {:?} before; slowest {:?} over {} pulls across the leader's SIGKILL: stall {stall:?}",
        before.median, across.slowest, across.count
    );
    let new_leader = s.cluster.leader();
    assert!(new_leader.is_some_and(|l| l != leader), "no new leader");
    assert!(
        stall < Duration::from_secs(1),
        "a cold pull stalled {stall:?} after the leader crashed; the survivor's log:\n{}",
        s.cluster.log(survivor)
    );
}

/// A rolling restart of every member, leader included (each SIGTERMed, restarted and back in
/// the membership before the next): cold pulls on a running member never stall 0.5 s.
#[tokio::test]
async fn a_rolling_restart_of_every_member_stalls_no_cold_pull() {
    let blobs = pool(1200, 256 * 1024, 3000);
    let refs: Vec<&Blob> = blobs.iter().collect();
    let mut s = setup(&refs, None).await;
    let leader = s.cluster.leader().expect("a leader");
    // The leader restarts second: once as a follower before it, once after.
    let order = [(leader + 1) % 3, leader, (leader + 2) % 3];
    let mut worst = Duration::ZERO;
    for (round, restarting) in order.into_iter().enumerate() {
        let probe = (restarting + 1) % 3;
        let base = s.cluster.members[probe].url();
        let digests: Vec<String> = blobs[round * 400..(round + 1) * 400]
            .iter()
            .map(|b| b.digest.clone())
            .collect();
        let before = baseline(&base, &digests[..100]).await;
        let cluster = &mut s.cluster;
        let across = cold_pulls(
            base,
            digests[100..].to_vec(),
            async {
                cluster.stop(restarting).await.unwrap();
                cluster.restart(restarting).await.unwrap();
                cluster.wait_members(3).await.unwrap();
            },
            Duration::from_millis(500),
        )
        .await;
        let stall = across.stall_over(&before);
        eprintln!(
            "member {restarting}{} restarted: on member {probe}, median {:?} before, slowest {:?} over {} pulls: stall {stall:?}",
            if restarting == leader {
                " (leader)"
            } else {
                ""
            },
            before.median,
            across.slowest,
            across.count
        );
        worst = worst.max(stall);
    }
    eprintln!("rolling restart: worst stall {worst:?}");
    assert!(
        worst < Duration::from_millis(500),
        "a cold pull stalled {worst:?} in the rolling restart"
    );
}
