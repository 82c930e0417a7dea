//! The checks [`run_all`](super::run_all) runs.

use super::*;

/// (a), (c), (e): `params.packets` packets of mixed sizes reach each of
/// `params.subscribers` subscribers byte-identical and in order; counters agree.
pub fn check_delivery<P: Publisher, S: Subscriber>(
    profile: &Profile,
    params: &Params,
    make_pub: &mut impl FnMut() -> P,
    make_sub: &mut impl FnMut(&P) -> S,
) {
    let n = params.subscribers;
    let mut rig = Rig::new(profile, params, "delivery", n, make_pub, make_sub);
    rig.login_all();
    let max = rig.p.max_packet_len();
    let stream = test_stream(params.seed, params.packets, max);
    let mut trackers: Vec<Option<Tracker>> =
        (0..n).map(|_| Some(Tracker::new(stream.len(), 0))).collect();
    let mut published = 0;
    let mut published_bytes = 0u64;
    while published < stream.len() {
        let end = (published + params.window.max(1)).min(stream.len());
        published_bytes += rig.publish_range(&stream, published..end);
        published = end;
        rig.flush();
        drain_data(&mut rig, &mut trackers, &stream, published);
    }
    let need = must_arrive(profile.delivery, stream.len());
    for (i, t) in trackers.iter().enumerate() {
        let got = t.as_ref().map_or(0, |t| t.distinct);
        if got < need {
            rig.fail(format!("subscriber {i} got {got} of {} packets (need {need})", stream.len()));
        }
    }
    // Let anything stray (a duplicate, a late packet) show up before counting.
    for _ in 0..SETTLE_PUMPS {
        let (reqs, evs) = rig.step();
        if !reqs.is_empty() {
            rig.fail("unexpected request after publishing");
        }
        for (i, SubEv::Packet(line, bytes)) in evs {
            let t = trackers[i].as_mut().expect("all live");
            if let Err(e) = t.on_packet(
                line,
                &bytes,
                &stream,
                published,
                profile.delivery == Delivery::Reliable,
            ) {
                rig.fail(format!("subscriber {i} after the stream: {e}"));
            }
        }
    }
    rig.check_stats(
        stream.len() as u64,
        published_bytes,
        stream.len() as u64 * n as u64,
        published_bytes * n as u64,
    );
}

/// (b): requests reach the publisher with their exact bytes, attributed to
/// the right peer; `send_to` replies reach that subscriber only, in order.
pub fn check_requests<P: Publisher, S: Subscriber>(
    profile: &Profile,
    params: &Params,
    make_pub: &mut impl FnMut() -> P,
    make_sub: &mut impl FnMut(&P) -> S,
) {
    let n = params.subscribers.max(2);
    let mut rig = Rig::new(profile, params, "requests", n, make_pub, make_sub);
    rig.login_all();
    let max = rig.p.max_packet_len();
    let reliable = profile.delivery == Delivery::Reliable;
    // Per subscriber: next request index expected at the publisher, and
    // next reply index expected at the subscriber.
    let mut next_req = vec![0usize; n];
    let mut next_reply = vec![0usize; n];
    let mut got_req = vec![0usize; n];
    let mut got_reply = vec![0usize; n];
    let mut sent = 0usize;
    for round in 0..params.request_rounds {
        // Bursts of 1..=8 back-to-back requests per subscriber.
        let burst = 1 + round % 8;
        let first = sent;
        for i in 0..n {
            for j in first..first + burst {
                rig.send_request(i, &request(i, j));
            }
        }
        sent += burst;
        let mut idle = 0u32;
        let mut pumps = 0u64;
        loop {
            // Best effort: once the round's last reply is in, nothing earlier
            // is still coming.
            let done = if reliable {
                got_req.iter().all(|&g| g >= sent) && got_reply.iter().all(|&g| g >= sent)
            } else {
                next_reply.iter().all(|&j| j >= sent)
            };
            if done || (!reliable && idle >= BEST_EFFORT_IDLE_PUMPS) {
                break;
            }
            pumps += 1;
            if pumps > MAX_PUMPS_PER_DRAIN {
                rig.fail("requests or replies still missing");
            }
            let (reqs, evs) = rig.step();
            if reqs.is_empty() && evs.is_empty() {
                idle += 1;
            } else {
                idle = 0;
            }
            for (peer, bytes) in reqs {
                let Some(&i) = rig.peers.get(&peer) else {
                    rig.fail(format!("request from peer {peer}, which never logged in"))
                };
                let Some((_, j)) = untag(&bytes) else {
                    rig.fail(format!("undecodable request from subscriber {i}"))
                };
                if j >= sent || bytes != request(i, j) {
                    rig.fail(format!(
                        "request from subscriber {i} (peer {peer}) differs from any it sent"
                    ));
                }
                if j < next_req[i] || (reliable && j != next_req[i]) {
                    rig.fail(format!(
                        "subscriber {i}: request {j} arrived, expected {}",
                        next_req[i]
                    ));
                }
                next_req[i] = j + 1;
                got_req[i] += 1;
                rig.send_to(i, &reply(i, j, max));
            }
            rig.flush();
            for (i, SubEv::Packet(_, bytes)) in evs {
                let Some((s, j)) = untag(&bytes) else {
                    rig.fail(format!("subscriber {i}: undecodable reply"))
                };
                if s != i {
                    rig.fail(format!("subscriber {i} received a reply meant for subscriber {s}"));
                }
                if j >= sent || bytes != reply(i, j, max) {
                    rig.fail(format!("subscriber {i}: reply differs from the one sent"));
                }
                if j < next_reply[i] || (reliable && j != next_reply[i]) {
                    rig.fail(format!(
                        "subscriber {i}: reply {j} arrived, expected {}",
                        next_reply[i]
                    ));
                }
                next_reply[i] = j + 1;
                got_reply[i] += 1;
            }
        }
    }
    let need = must_arrive(profile.delivery, sent);
    for i in 0..n {
        if got_req[i] < need || got_reply[i] < need {
            rig.fail(format!(
                "subscriber {i}: {} requests and {} replies of {sent} arrived (need {need})",
                got_req[i], got_reply[i]
            ));
        }
    }
    rig.check_stats(0, 0, 0, 0);
}

/// Stream transports: publish reaches exactly the peers marked live, from the
/// moment they are marked, until they are unmarked.
pub fn check_set_live<P: Publisher, S: Subscriber>(
    profile: &Profile,
    params: &Params,
    make_pub: &mut impl FnMut() -> P,
    make_sub: &mut impl FnMut(&P) -> S,
) {
    let mut rig = Rig::new(profile, params, "set_live", 2, make_pub, make_sub);
    rig.side[1].live_on_login = false;
    rig.login_all();
    let max = rig.p.max_packet_len();
    let total = 300;
    let stream = test_stream(params.seed ^ 0x5e7, total, max);
    let mut trackers = vec![Some(Tracker::new(total, 0)), None];
    let mut bytes = [0u64; 2];
    let mut copies = [0u64; 2];
    // Phase 1: only subscriber 0 is live.
    bytes[0] += rig.publish_range(&stream, 0..200);
    copies[0] += 200;
    rig.flush();
    drain_data(&mut rig, &mut trackers, &stream, 200);
    for _ in 0..SETTLE_PUMPS {
        let (_, evs) = rig.step();
        if let Some((i, _)) = evs.first() {
            rig.fail(format!("subscriber {i} got a packet after phase 1 was drained"));
        }
    }
    // Phase 2: subscriber 1 goes live and gets packets from 200 on.
    let peer1 = rig.side[1].peer.expect("logged in");
    rig.p.set_live(peer1, true);
    trackers[1] = Some(Tracker::new(total, 200));
    let b = rig.publish_range(&stream, 200..250);
    bytes = [bytes[0] + b, bytes[1] + b];
    copies = [copies[0] + 50, copies[1] + 50];
    rig.flush();
    drain_data(&mut rig, &mut trackers, &stream, 250);
    // Phase 3: subscriber 0 is no longer live.
    let peer0 = rig.side[0].peer.expect("logged in");
    rig.p.set_live(peer0, false);
    trackers[0] = None;
    bytes[1] += rig.publish_range(&stream, 250..300);
    copies[1] += 50;
    rig.flush();
    drain_data(&mut rig, &mut trackers, &stream, 300);
    for _ in 0..SETTLE_PUMPS {
        let (_, evs) = rig.step();
        if let Some((i, SubEv::Packet(_, b))) = evs.first() {
            rig.fail(format!("subscriber {i} got a {}-byte packet after all was drained", b.len()));
        }
    }
    let published_bytes: u64 = stream.iter().map(|p| p.len() as u64).sum();
    rig.check_stats(total as u64, published_bytes, copies[0] + copies[1], bytes[0] + bytes[1]);
}

/// (d): a zero-timeout poll returns promptly on both sides, idle or not, and
/// zero-timeout polls alone deliver data and requests.
pub fn check_zero_timeout<P: Publisher, S: Subscriber>(
    profile: &Profile,
    params: &Params,
    make_pub: &mut impl FnMut() -> P,
    make_sub: &mut impl FnMut(&P) -> S,
) {
    let mut rig = Rig::new(profile, params, "zero timeout", 1, make_pub, make_sub);
    rig.login_all();
    // Idle: nothing pending, nothing reported (but a late duplicate of a
    // resent Login or its LoginAck, on a best-effort transport).
    let dup_ok = profile.delivery != Delivery::Reliable;
    let (my_login, my_ack) = (login(0), login_ack(0));
    for k in 0..IDLE_ZERO_POLLS {
        let t = Instant::now();
        let mut seen = 0;
        if let Err(e) = rig.p.poll(Some(Duration::ZERO), &mut |ev| match ev {
            crate::PubEvent::Request { packet, .. } if dup_ok && packet == my_login => {}
            _ => seen += 1,
        }) {
            rig.fail(format!("publisher poll: {e}"));
        }
        if let Err(e) = rig.subs[0].poll(Some(Duration::ZERO), &mut |ev| match ev {
            SubEvent::Packet { packet, .. } if dup_ok && packet == my_ack => {}
            _ => seen += 1,
        }) {
            rig.fail(format!("subscriber poll: {e}"));
        }
        if t.elapsed() > ZERO_POLL_LIVENESS {
            rig.fail(format!("zero-timeout poll {k} blocked for {:?}", t.elapsed()));
        }
        if seen != 0 {
            rig.fail(format!("idle zero-timeout poll {k} reported {seen} events"));
        }
    }
    // Busy: publish, then drive both sides with zero-timeout polls only.
    let max = rig.p.max_packet_len();
    let stream = test_stream(params.seed ^ 0x2e40, 500, max);
    for (k, p) in stream.iter().enumerate() {
        rig.publish(k, p);
    }
    rig.flush();
    rig.send_request(0, &request(0, 0));
    let reliable = profile.delivery == Delivery::Reliable;
    let mut t = Tracker::new(stream.len(), 0);
    let mut got_request = false;
    let mut idle = 0u64;
    let mut polls = 0u64;
    while t.distinct < stream.len() || !got_request {
        polls += 1;
        if polls > MAX_PUMPS_PER_DRAIN {
            rig.fail("zero-timeout polls did not deliver everything");
        }
        if !reliable && idle > BEST_EFFORT_IDLE_ZERO_POLLS {
            break;
        }
        if Instant::now() > rig.deadline {
            rig.fail("deadline passed with zero-timeout polls");
        }
        let start = Instant::now();
        let mut reqs = Vec::new();
        if let Err(e) = rig.p.poll(Some(Duration::ZERO), &mut |ev| {
            if let crate::PubEvent::Request { packet, .. } = ev {
                reqs.push(packet.to_vec());
            }
        }) {
            rig.fail(format!("publisher poll: {e}"));
        }
        let mut pkts = Vec::new();
        if let Err(e) = rig.subs[0].poll(Some(Duration::ZERO), &mut |ev| {
            if let SubEvent::Packet { line, packet, .. } = ev {
                pkts.push((line, packet.to_vec()));
            }
        }) {
            rig.fail(format!("subscriber poll: {e}"));
        }
        if start.elapsed() > ZERO_POLL_LIVENESS {
            rig.fail(format!("a zero-timeout poll blocked for {:?}", start.elapsed()));
        }
        idle = if reqs.is_empty() && pkts.is_empty() { idle + 1 } else { 0 };
        for r in reqs {
            if r != request(0, 0) {
                rig.fail("the publisher got a request that differs from the one sent");
            }
            got_request = true;
        }
        for (line, bytes) in pkts {
            if let Err(e) = t.on_packet(line, &bytes, &stream, stream.len(), reliable) {
                rig.fail(format!("subscriber 0: {e}"));
            }
        }
    }
    let need = must_arrive(profile.delivery, stream.len());
    if t.distinct < need {
        rig.fail(format!(
            "{} of {} packets arrived with zero-timeout polls",
            t.distinct,
            stream.len()
        ));
    }
}
