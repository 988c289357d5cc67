use super::*;

fn entry(key: &str, client: u32, not_before: u64, not_after: u64) -> (usize, Entry) {
    (
        client as usize,
        Entry {
            digest: digest(key),
            client,
            not_before,
            not_after,
        },
    )
}

#[test]
fn finds_valid_keys_by_digest() {
    let table = KeyTable::new(vec![
        entry("alpha-key-0123456789", 0, 0, u64::MAX),
        entry("bravo-key-0123456789", 1, 0, u64::MAX),
    ])
    .unwrap();
    assert_eq!(table.lookup("alpha-key-0123456789", 5), Lookup::Valid(0));
    assert_eq!(table.lookup("bravo-key-0123456789", 5), Lookup::Valid(1));
    assert_eq!(table.lookup("charlie-key-01234567", 5), Lookup::Unknown);
    assert_eq!(table.lookup("", 5), Lookup::Unknown);
    // A key differing only in case or by surrounding space is another key.
    assert_eq!(table.lookup("ALPHA-key-0123456789", 5), Lookup::Unknown);
    assert_eq!(table.lookup(" alpha-key-0123456789", 5), Lookup::Unknown);
}

#[test]
fn validity_period_is_half_open() {
    let table = KeyTable::new(vec![entry("rotating-key-0123456", 0, 100, 200)]).unwrap();
    assert_eq!(table.lookup("rotating-key-0123456", 99), Lookup::Retired);
    assert_eq!(table.lookup("rotating-key-0123456", 100), Lookup::Valid(0));
    assert_eq!(table.lookup("rotating-key-0123456", 199), Lookup::Valid(0));
    assert_eq!(table.lookup("rotating-key-0123456", 200), Lookup::Retired);
}

#[test]
fn a_digest_given_twice_is_refused_with_both_positions() {
    let mut second = entry("same-key-0123456789ab", 1, 0, u64::MAX);
    second.0 = 7;
    let err = KeyTable::new(vec![
        entry("same-key-0123456789ab", 0, 0, u64::MAX),
        entry("other-key-0123456789a", 1, 0, u64::MAX),
        second,
    ])
    .unwrap_err();
    assert_eq!(err, (0, 7));
}

#[test]
fn a_hundred_thousand_keys() {
    let entries = (0..100_000u32)
        .map(|i| entry(&format!("key-{i:08}-padding"), i, 0, u64::MAX))
        .collect();
    let table = KeyTable::new(entries).unwrap();
    assert_eq!(table.len(), 100_000);
    assert_eq!(
        table.lookup("key-00054321-padding", 1),
        Lookup::Valid(54_321)
    );
    assert_eq!(table.lookup("key-00100000-padding", 1), Lookup::Unknown);
}
