use serde_json::{Value, json};

use super::*;
use fusou_synth::{FragmentSpec, fragment};

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const NOW: u64 = 1_800_000_000;

fn user() -> Uuid {
    Uuid::parse_str("6f1c1c7e-3b8a-4c53-9a1f-2a4b5c6d7e8f").unwrap()
}

/// A handshake exactly as the deployed client sends it, for a generated fragment.
fn client_handshake(f: &fusou_synth::Fragment) -> Value {
    json!({
        "path": "2025-11-05-port-7-3.bin",
        "binary": true,
        "dataset_id": "3f0c2c0e-6a43-4a59-9d7b-1a2b3c4d5e6f\n",
        "table": "port_table",
        "kc_period_tag": "2025-11-05",
        "file_size": f.bytes.len().to_string(),
        "table_offsets": f.table_offsets_string(),
        "content_hash": ContentHash::of(&f.bytes).as_str(),
    })
}

fn parse(v: &Value) -> Result<Handshake, UploadError> {
    Handshake::parse(v.to_string().as_bytes(), &UploadLimits::default())
}

#[test]
fn the_clients_handshake_is_accepted_as_sent() {
    let f = fragment(&FragmentSpec::default());
    let h = parse(&client_handshake(&f)).unwrap();
    assert_eq!(h.dataset_id.as_str(), "3f0c2c0e-6a43-4a59-9d7b-1a2b3c4d5e6f");
    assert_eq!(h.file_size, f.bytes.len() as u64);
    assert_eq!(h.offsets, f.offsets);

    // A number for file_size, an array for table_offsets, a hex dataset id, period "0".
    let mut v = client_handshake(&f);
    v["file_size"] = json!(f.bytes.len());
    v["table_offsets"] = serde_json::to_value(&f.offsets).unwrap();
    v["dataset_id"] = json!("9b74c9897bac770ffc029102a200c5de9b74c9897bac770ffc029102a200c5de");
    v["kc_period_tag"] = json!("0");
    assert_eq!(parse(&v).unwrap().offsets, f.offsets);
}

#[test]
fn every_bad_field_is_a_400_that_says_what() {
    let f = fragment(&FragmentSpec::default());
    let cases: Vec<(&str, Value, &str)> = vec![
        ("dataset_id", json!("../../etc"), "dataset id"),
        ("dataset_id", json!(""), "dataset id"),
        ("table", json!("Port/Table"), "table"),
        ("kc_period_tag", json!("2025/11/05"), "period tag"),
        ("content_hash", json!("ABC"), "content_hash"),
        ("content_hash", json!("9B74C9897BAC770FFC029102A200C5DE9B74C9897BAC770FFC029102A200C5DE"), "content_hash"),
        ("file_size", json!("12kb"), "file_size"),
        ("file_size", json!("-5"), "file_size"),
        ("file_size", json!("0"), "file_size"),
        ("file_size", json!(1.5), "file_size"),
        ("table_offsets", json!("[{\"table_name\":\"battle\"}]"), "table_offsets"),
        ("table_offsets", json!("[]"), "table_offsets is empty"),
    ];
    for (field, value, says) in cases {
        let mut v = client_handshake(&f);
        v[field] = value.clone();
        let err = parse(&v).unwrap_err();
        assert_eq!(err.status(), 400, "{field}={value}: {err}");
        assert!(err.to_string().contains(says), "{field}={value}: {err}");
    }
    for missing in ["dataset_id", "table", "kc_period_tag", "file_size", "table_offsets", "content_hash"] {
        let mut v = client_handshake(&f);
        v.as_object_mut().unwrap().remove(missing);
        assert_eq!(parse(&v).unwrap_err().status(), 400, "without {missing}");
    }
    assert_eq!(Handshake::parse(b"not json", &UploadLimits::default()).unwrap_err().status(), 400);
}

#[test]
fn sizes_and_segments_are_held_to_the_declaration() {
    let f = fragment(&FragmentSpec::default());
    let mut v = client_handshake(&f);
    v["file_size"] = json!((65u64 << 20).to_string());
    assert_eq!(parse(&v).unwrap_err().status(), 413);

    // A segment reaching past the declared size, and two that overlap.
    let mut v = client_handshake(&f);
    v["file_size"] = json!((f.bytes.len() - 1).to_string());
    assert!(matches!(parse(&v), Err(UploadError::BadFragment(FragmentError::OutOfRange { .. }))));
    let mut offsets = f.offsets.clone();
    offsets[1].start_byte = offsets[0].start_byte + 1;
    let mut v = client_handshake(&f);
    v["table_offsets"] = json!(serde_json::to_string(&offsets).unwrap());
    assert!(matches!(parse(&v), Err(UploadError::BadFragment(FragmentError::Overlap { .. }))));
}

#[test]
fn a_content_hash_gives_its_digest_bytes() {
    use sha2::{Digest, Sha256};
    assert_eq!(ContentHash::of(b"fusou").to_bytes(), Sha256::digest(b"fusou").to_vec());
}

#[test]
fn keys_are_built_from_validated_parts() {
    let key = fragment_key(
        &DatasetId::parse("ds-1").unwrap(),
        &TableName::parse("port_table").unwrap(),
        "2025-11-05T01:02:03Z".parse().unwrap(),
        Uuid::nil(),
    );
    assert_eq!(key, "battle_data/ds-1/port_table/20251105010203-00000000-0000-0000-0000-000000000000.parquet");
}

fn grant_for(f: &fusou_synth::Fragment) -> UploadGrant {
    let h = parse(&client_handshake(f)).unwrap();
    UploadGrant::new(&h, user(), "battle_data/k.parquet".into(), NOW, &UploadLimits::default())
}

#[test]
fn grants_bind_the_user_and_expire() {
    let f = fragment(&FragmentSpec::default());
    let grant = grant_for(&f);
    let token = grant.sign(SECRET).unwrap();
    assert_eq!(UploadGrant::verify(&token, SECRET, user(), NOW + 119).unwrap(), grant);
    assert_eq!(UploadGrant::verify(&token, SECRET, user(), NOW + 120), Err(UploadError::GrantExpired));
    assert_eq!(UploadGrant::verify(&token, SECRET, Uuid::nil(), NOW), Err(UploadError::ForeignGrant));
    let other_secret = "fedcba9876543210fedcba9876543210";
    assert!(matches!(UploadGrant::verify(&token, other_secret, user(), NOW), Err(UploadError::BadGrant(_))));
    // Tampering with the claims breaks the signature.
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    parts[1] = parts[1].chars().rev().collect();
    assert!(matches!(UploadGrant::verify(&parts.join("."), SECRET, user(), NOW), Err(UploadError::BadGrant(_))));
}

#[test]
fn no_secret_means_misconfigured_never_a_default() {
    let f = fragment(&FragmentSpec::default());
    for weak in ["", "short"] {
        let err = grant_for(&f).sign(weak).unwrap_err();
        assert_eq!(err.status(), 500);
        assert!(matches!(UploadGrant::verify("x.y.z", weak, user(), NOW), Err(UploadError::Misconfigured(_))));
    }
}

#[test]
fn the_body_must_be_what_was_declared() {
    let f = fragment(&FragmentSpec::default());
    let grant = grant_for(&f);
    let body = Bytes::from(f.bytes.clone());
    // An older client declares no row counts: the checked offsets carry the footers' own.
    let mut older = grant.clone();
    older.offsets.iter_mut().for_each(|o| o.num_rows = None);
    let checked = checked_body(&older, body.clone()).unwrap();
    let rows: Vec<Option<u64>> = checked.iter().map(|o| o.num_rows).collect();
    assert_eq!(rows, f.segments.iter().map(|s| Some(s.batch.num_rows() as u64)).collect::<Vec<_>>());
    assert_eq!(checked, f.offsets, "otherwise the declared offsets");

    let short = body.slice(..body.len() - 1);
    assert!(checked_body(&grant, short.clone()).unwrap_err().to_string().contains("declared"));
    let mut longer = f.bytes.clone();
    longer.push(0);
    assert_eq!(checked_body(&grant, Bytes::from(longer)).unwrap_err().status(), 400);
    let mut flipped = f.bytes.clone();
    flipped[10] ^= 1;
    assert!(checked_body(&grant, Bytes::from(flipped)).unwrap_err().to_string().contains("content_hash"));

    // The declared hash of bytes whose segment is broken: the table is named.
    let mut broken = f.bytes.clone();
    let o = &f.offsets[0];
    broken[o.start_byte as usize] = b'X';
    let mut g = grant.clone();
    g.hash = ContentHash::of(&broken);
    let err = checked_body(&g, Bytes::from(broken)).unwrap_err();
    assert!(err.to_string().contains(o.table_name.as_str()), "{err}");

    // More rows than one upload may hold: 413, whatever its bytes.
    let rows: u64 = f.segments.iter().map(|s| s.batch.num_rows() as u64).sum();
    let tight = UploadLimits { max_rows: rows - 1, ..UploadLimits::default() };
    let err = grant.check_body(&body, &ContentHash::of(&body), &tight).unwrap_err();
    assert_eq!((err.status(), err.clone()), (413, UploadError::TooManyRows { rows, max: rows - 1 }));
    assert!(grant.check_body(&body, &ContentHash::of(&body), &UploadLimits { max_rows: rows, ..UploadLimits::default() }).is_ok());
}

#[test]
fn anonymous_sign_ins_upload_only_where_allowed() {
    use fusou_auth::AuthenticatedUser;
    let signed_in = AuthenticatedUser { id: user(), email: Some("a@example.com".into()), anonymous: false, expires_at: u64::MAX };
    let anonymous = AuthenticatedUser { id: user(), email: None, anonymous: true, expires_at: u64::MAX };
    let default = UploadLimits::default();
    assert_eq!(check_uploader(&signed_in, &default), Ok(()));
    assert_eq!(check_uploader(&anonymous, &default), Err(UploadError::Anonymous));
    assert_eq!(UploadError::Anonymous.status(), 403);
    let allowing = UploadLimits { allow_anonymous: true, ..default };
    assert_eq!(check_uploader(&anonymous, &allowing), Ok(()));
}

/// The body as the Worker checks it: with its digest computed beside it.
fn checked_body(grant: &UploadGrant, body: Bytes) -> Result<Vec<TableOffset>, UploadError> {
    grant.check_body(&body, &ContentHash::of(&body), &UploadLimits::default())
}

#[test]
fn a_digest_computed_elsewhere_is_the_same_hash() {
    let body = b"fusou";
    let digest: Vec<u8> = ContentHash::of(body).to_bytes();
    assert_eq!(ContentHash::from_digest(&digest).unwrap(), ContentHash::of(body));
    assert!(ContentHash::from_digest(&digest[..31]).is_err());
}
