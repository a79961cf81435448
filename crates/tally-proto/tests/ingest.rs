//! `ingest::RecordUsageBatchWire` (the batch request read straight from its bytes, as
//! tally-server does) against prost's message and its `to_command`: for the same bytes, the
//! same command or the same error; where prost cannot decode the bytes, an error too.

use prost::encoding::{encode_key, encode_varint, WireType};
use prost::Message;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tally_proto::ingest::RecordUsageBatchWire;
use tally_proto::{v1, ToCommand};

/// What a server answers for these bytes: prost's way (decode, then convert) and the wire way.
fn both(bytes: &[u8]) -> (Option<String>, String) {
    let prost = v1::RecordUsageBatchRequest::decode(bytes)
        .ok()
        .map(|request| format!("{:?}", request.to_command()));
    let wire = RecordUsageBatchWire::decode(bytes).expect("the wire form keeps any bytes");
    assert_eq!(wire.bytes().as_ref(), bytes, "kept as they came");
    assert_eq!(wire.encode_to_vec(), bytes, "encodes as they came");
    assert_eq!(wire.encoded_len(), bytes.len());
    (prost, format!("{:?}", wire.to_command()))
}

/// The same answer both ways; where prost cannot decode, the wire way refuses too.
fn check(bytes: &[u8]) {
    match both(bytes) {
        (Some(prost), wire) => assert_eq!(prost, wire, "bytes {bytes:?}"),
        (None, wire) => assert!(
            wire.starts_with("Err(") && wire.contains("is not valid protobuf"),
            "prost refuses {bytes:?}; the wire form answered {wire}"
        ),
    }
}

fn kv(key: &str, value: &str) -> v1::KeyValue {
    v1::KeyValue {
        key: key.to_string(),
        value: value.to_string(),
    }
}

fn event(i: usize) -> v1::UsageEvent {
    v1::UsageEvent {
        event_id: format!("ev-{i}"),
        account: format!("acct-{}", i % 7),
        meter: "tokens".to_string(),
        quantity: format!("{}.5", i * 3),
        dimensions: vec![kv("model", "large"), kv("region", "eu")],
        occurred_at_ms: 1_700_000_000_000 + i as u64,
        cost: i.is_multiple_of(3).then(|| "0.25".to_string()),
        hold_id: i.is_multiple_of(5).then(|| format!("hold-{i}")),
    }
}

fn batch(events: usize) -> v1::RecordUsageBatchRequest {
    v1::RecordUsageBatchRequest {
        events: (0..events).map(event).collect(),
        atomic: events.is_multiple_of(2),
        reply: v1::BatchReply::UnsettledOnly as i32,
    }
}

#[test]
fn a_well_formed_batch_gives_the_same_command_and_its_top_level() {
    let request = batch(40);
    let bytes = request.encode_to_vec();
    let (prost, wire) = both(&bytes);
    assert!(wire.starts_with("Ok(UsageBatch"), "{wire}");
    assert_eq!(prost.as_deref(), Some(wire.as_str()));
    let wire = RecordUsageBatchWire::from(&request);
    let top = wire.batch().unwrap();
    assert_eq!(top.len(), 40);
    assert!(top.atomic);
    assert_eq!(top.reply, v1::BatchReply::UnsettledOnly as i32);
}

/// Values that fail each check, one field at a time: the same error, naming the same field.
#[test]
fn every_invalid_value_fails_alike() {
    let mut rng = SmallRng::seed_from_u64(7);
    let bad_text = [
        "",
        " ",
        "a b",
        "-1",
        "1e3",
        "0.1234567890123456789012345",
        "x\u{7}",
        "é",
        &"long".repeat(100),
    ];
    for round in 0..400 {
        let mut request = batch(1 + rng.gen_range(0..6));
        let at = rng.gen_range(0..request.events.len());
        let bad = bad_text[rng.gen_range(0..bad_text.len())].to_string();
        let e = &mut request.events[at];
        match round % 10 {
            0 => e.event_id = bad,
            1 => e.account = bad,
            2 => e.meter = bad,
            3 => e.quantity = bad,
            4 => e.dimensions[rng.gen_range(0..2)].key = bad,
            5 => e.dimensions[rng.gen_range(0..2)].value = bad,
            6 => e.cost = Some(bad),
            7 => e.hold_id = Some(bad),
            8 => e.occurred_at_ms = 0,
            _ => e.dimensions.push(kv("model", "again")),
        }
        check(&request.encode_to_vec());
    }
    check(&v1::RecordUsageBatchRequest::default().encode_to_vec());
    check(&batch(8_191).encode_to_vec());
}

fn field(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// Bytes prost's encoder never writes but a client may: fields out of order, sent twice (the
/// last one counts; lists append), unknown fields of every wire type, at every level.
#[test]
fn unusual_but_valid_encodings_read_alike() {
    let unknown = {
        let mut out = Vec::new();
        encode_key(99, WireType::Varint, &mut out);
        encode_varint(300, &mut out);
        encode_key(98, WireType::ThirtyTwoBit, &mut out);
        out.extend_from_slice(&[1, 2, 3, 4]);
        encode_key(97, WireType::SixtyFourBit, &mut out);
        out.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        field(&mut out, 96, b"unknown text");
        encode_key(95, WireType::StartGroup, &mut out);
        encode_key(1, WireType::Varint, &mut out);
        encode_varint(5, &mut out);
        encode_key(95, WireType::EndGroup, &mut out);
        out
    };
    let mut pair = unknown.clone();
    field(&mut pair, 2, b"eu");
    field(&mut pair, 1, b"region");
    field(&mut pair, 1, b"zone");
    let mut event = Vec::new();
    event.extend_from_slice(&unknown);
    encode_key(6, WireType::Varint, &mut event);
    encode_varint(1_700_000_000_000, &mut event);
    field(&mut event, 4, b"2");
    field(&mut event, 1, b"first-id");
    field(&mut event, 2, b"acct-1");
    field(&mut event, 3, b"tokens");
    field(&mut event, 5, &pair);
    field(&mut event, 1, b"second-id");
    field(&mut event, 7, b"0.5");
    field(&mut event, 7, b"0.75");
    let mut request = Vec::new();
    encode_key(2, WireType::Varint, &mut request);
    encode_varint(1, &mut request);
    request.extend_from_slice(&unknown);
    field(&mut request, 1, &event);
    encode_key(3, WireType::Varint, &mut request);
    encode_varint(0xFFFF_FFFF_0000_0001, &mut request); // int32: the low 32 bits, 1
    field(&mut request, 1, &event);
    encode_key(2, WireType::Varint, &mut request);
    encode_varint(0, &mut request);
    let (prost, wire) = both(&request);
    assert!(
        wire.contains("second-id") && wire.contains("zone"),
        "{wire}"
    );
    assert_eq!(prost.as_deref(), Some(wire.as_str()));
    let wire = RecordUsageBatchWire::decode(request.as_slice()).unwrap();
    let top = wire.batch().unwrap();
    assert_eq!((top.len(), top.atomic, top.reply), (2, false, 1));
}

/// Every prefix of a batch, every single flipped byte, and known fields with the wrong wire
/// type: the wire form never panics, answers as prost where prost decodes, refuses where prost
/// refuses.
#[test]
fn malformed_bytes_are_refused_with_the_field_named() {
    let bytes = batch(3).encode_to_vec();
    for end in 0..bytes.len() {
        check(&bytes[..end]);
    }
    let mut rng = SmallRng::seed_from_u64(11);
    for _ in 0..3_000 {
        let mut flipped = bytes.clone();
        let at = rng.gen_range(0..flipped.len());
        flipped[at] ^= 1 << rng.gen_range(0..8);
        check(&flipped);
    }
    let mut event = Vec::new();
    encode_key(4, WireType::Varint, &mut event); // quantity is a string
    encode_varint(2, &mut event);
    let mut request = Vec::new();
    field(&mut request, 1, &event);
    check(&request);
    let (_, wire) = both(&request);
    assert!(wire.contains("events[0].quantity"), "{wire}");

    let mut event = Vec::new();
    field(&mut event, 1, &[0xff, 0xfe]); // not UTF-8
    let mut request = Vec::new();
    field(&mut request, 1, &event);
    let (prost, wire) = both(&request);
    assert_eq!(prost, None);
    assert!(
        wire.contains("events[0].event_id") && wire.contains("UTF-8"),
        "{wire}"
    );
}

/// The message trait's other ways in: merging appends (protobuf's merge of two encodings is
/// the decoding of both, one after the other), length-delimited, and field by field.
#[test]
fn merging_keeps_what_prost_would_keep() {
    let first = batch(2).encode_to_vec();
    let second = batch(3).encode_to_vec();
    let mut wire = RecordUsageBatchWire::decode(first.as_slice()).unwrap();
    wire.merge(second.as_slice()).unwrap();
    let mut expected = v1::RecordUsageBatchRequest::decode(first.as_slice()).unwrap();
    expected.merge(second.as_slice()).unwrap();
    assert_eq!(
        format!("{:?}", wire.to_command()),
        format!("{:?}", expected.to_command())
    );

    let mut delimited = Vec::new();
    encode_varint(first.len() as u64, &mut delimited);
    delimited.extend_from_slice(&first);
    let mut wire = RecordUsageBatchWire::default();
    wire.merge_length_delimited(delimited.as_slice()).unwrap();
    assert_eq!(wire.bytes().as_ref(), first.as_slice());

    // Field by field (as when embedded in another message): the same command.
    let mut wire = RecordUsageBatchWire::default();
    prost::encoding::message::merge(
        WireType::LengthDelimited,
        &mut wire,
        &mut delimited.as_slice(),
        Default::default(),
    )
    .unwrap();
    assert_eq!(
        format!("{:?}", wire.to_command()),
        format!("{:?}", batch(2).to_command())
    );
    wire.clear();
    assert!(wire.bytes().is_empty());
}

/// Events whose dimension entries repeat bytes an earlier event of the batch had (the reader
/// takes the list made from them then): lists cycling through more than it remembers, lists
/// whose encodings begin alike or differ only in their last byte, unsorted pairs, none, the
/// most allowed, entries split by another field, and a list that fails its check after the
/// same bytes with a pair less passed. Read as prost reads them, event by event.
#[test]
fn repeated_dimension_bytes_read_as_prost_reads_them() {
    let lists: Vec<Vec<(String, String)>> = {
        let owned = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        vec![
            owned(&[("model", "large"), ("region", "eu")]),
            owned(&[("model", "large"), ("region", "ev")]),
            owned(&[("model", "large"), ("region", "e")]),
            owned(&[("model", "larg"), ("region", "eu")]),
            owned(&[("model", "large")]),
            owned(&[("region", "eu"), ("model", "large")]),
            owned(&[("model", "eu"), ("region", "large")]),
            owned(&[("large", "model"), ("eu", "region")]),
            owned(&[("model", "large"), ("region", "eu"), ("tier", "gold")]),
            owned(&[]),
            (0..16)
                .map(|i| (format!("k{i:02}"), format!("v{i}")))
                .collect(),
            owned(&[("model", "large"), ("region", "eu"), ("zone", "a")]),
        ]
    };
    let encode_event = |i: usize, list: &[(String, String)], split: bool| {
        let mut event = Vec::new();
        field(&mut event, 1, format!("ev-{i}").as_bytes());
        field(&mut event, 2, format!("acct-{}", i % 5).as_bytes());
        field(&mut event, 3, b"tokens");
        field(&mut event, 4, format!("{}", i + 1).as_bytes());
        for (n, (key, value)) in list.iter().enumerate() {
            if split && n == 1 {
                encode_key(6, WireType::Varint, &mut event);
                encode_varint(1_700_000_000_000, &mut event);
            }
            let mut pair = Vec::new();
            field(&mut pair, 1, key.as_bytes());
            field(&mut pair, 2, value.as_bytes());
            field(&mut event, 5, &pair);
        }
        encode_key(6, WireType::Varint, &mut event);
        encode_varint(1_700_000_000_000 + i as u64, &mut event);
        event
    };
    let mut rng = SmallRng::seed_from_u64(17);
    for round in 0..20 {
        let mut request = Vec::new();
        for i in 0..300 {
            let list = rng.gen_range(0..lists.len());
            field(
                &mut request,
                1,
                &encode_event(i, &lists[list], rng.gen_range(0..4) == 0),
            );
        }
        let (prost, wire) = both(&request);
        assert!(wire.starts_with("Ok(UsageBatch"), "round {round}: {wire}");
        assert_eq!(prost.as_deref(), Some(wire.as_str()), "round {round}");
    }

    // The same bytes as a list that passed, then one pair more that fails: refused, naming it.
    let mut request = Vec::new();
    let valid = &lists[0];
    let mut invalid = valid.clone();
    invalid.push(("zone".to_string(), "a\u{7}".to_string()));
    for i in 0..5 {
        field(&mut request, 1, &encode_event(i, valid, false));
    }
    field(&mut request, 1, &encode_event(5, &invalid, false));
    check(&request);
    let (_, wire) = both(&request);
    assert!(
        wire.contains("events[5].dimensions[2].value") && wire.contains("control characters"),
        "{wire}"
    );
}

/// An event with two errors, the first in a dimension pair and the second in a later field:
/// the one reported is the first, in the order of the bytes.
#[test]
fn the_first_error_in_the_bytes_is_the_one_reported() {
    let mut pair = Vec::new();
    field(&mut pair, 1, &[0xff, 0xfe]); // a key that is not UTF-8
    field(&mut pair, 2, b"eu");
    let mut event = Vec::new();
    field(&mut event, 1, b"ev-1");
    field(&mut event, 5, &pair);
    field(&mut event, 3, &[0xff]); // a meter that is not UTF-8
    let mut request = Vec::new();
    field(&mut request, 1, &event);
    let (prost, wire) = both(&request);
    assert_eq!(prost, None);
    assert!(
        wire.contains("events[0].dimensions[0].key") && wire.contains("UTF-8"),
        "{wire}"
    );

    // The same pair with the later field valid: the pair's error.
    let mut event = Vec::new();
    field(&mut event, 1, b"ev-1");
    field(&mut event, 5, &pair);
    field(&mut event, 3, b"tokens");
    let mut request = Vec::new();
    field(&mut request, 1, &event);
    let (_, wire) = both(&request);
    assert!(wire.contains("events[0].dimensions[0].key"), "{wire}");
}
