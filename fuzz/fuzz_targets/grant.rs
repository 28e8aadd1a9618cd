//! Session grants into `Grants::verify` (signature, algorithm, key id, issuer, audience,
//! times), as a client presents them in `join`, `resume` and `POST /api/grants/refresh`, then
//! into the ids signaling reads from the claims. The trusted key is a fixed P-256 key, so the
//! committed seeds are real grants signed with it (and mangled copies).
//!
//! An input whose first byte is even is a token as a client sends it: forged, truncated,
//! re-encoded. One whose first byte is odd is a JWS header and claims in JSON (split at the
//! first newline), encoded and signed with the trusted key by the `Signer`, so that what comes
//! after the signature check — header and claims parsing, the time, issuer and audience
//! checks — sees fuzzed JSON too. Nothing may panic, and claims that verified, issued again,
//! verify to the same claims.

#![no_main]

use std::sync::{Arc, LazyLock};

use api::tokens::{Grants, LocalSigner, Signer};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;
use signaling::protocol::Role;
use signaling::wire::uuid_id;

/// The trusted signing key: PKCS#8 DER of a P-256 key made for these seeds (its key id is
/// `83ebc35e5bda66e3`). It signs nothing anywhere else.
const KEY: &[u8] = &[
    0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02,
    0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04, 0x6d, 0x30, 0x6b, 0x02,
    0x01, 0x01, 0x04, 0x20, 0xc4, 0xca, 0x80, 0xf2, 0x31, 0x37, 0xa9, 0xf3, 0x9d, 0x1e, 0x7e, 0x94,
    0xaa, 0xe9, 0x8b, 0xca, 0x59, 0x40, 0x74, 0x90, 0x71, 0x39, 0xa9, 0x31, 0x44, 0x2e, 0x62, 0x25,
    0x5e, 0xd5, 0xf4, 0x39, 0xa1, 0x44, 0x03, 0x42, 0x00, 0x04, 0x95, 0xe3, 0xfc, 0x25, 0x33, 0x3a,
    0x70, 0xfe, 0x46, 0xf2, 0xe9, 0x5c, 0x9f, 0x31, 0xb8, 0x43, 0x03, 0x6d, 0xca, 0xe7, 0x71, 0xe3,
    0xee, 0x62, 0x02, 0xeb, 0xf9, 0xd9, 0x33, 0x24, 0x92, 0xa8, 0x84, 0xe5, 0x0d, 0x02, 0xe5, 0xc0,
    0xbd, 0x02, 0xc9, 0x4c, 0x0a, 0xc3, 0xbd, 0xe8, 0x93, 0x9e, 0x65, 0xa4, 0x75, 0xdb, 0xc3, 0x97,
    0x3b, 0x90, 0xa8, 0x30, 0xa2, 0x5f, 0x7a, 0xfc, 0x6d, 0x9e,
];

/// The issuer the seeds name (`tokens.issuer`'s default).
const ISSUER: &str = "bedside";

/// The trusted key's signer, and the grant service that trusts it.
struct Keys {
    signer: Arc<LocalSigner>,
    grants: Grants,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let signer = Arc::new(LocalSigner::from_pkcs8(KEY).expect("the fixed key"));
    let grants = Grants::new(signer.clone(), ISSUER).expect("grants over the fixed key");
    Keys { signer, grants }
});

/// `header.claims.signature`, signed with the trusted key.
fn signed(header: &[u8], claims: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = block_on(KEYS.signer.sign(input.as_bytes())).expect("signing");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode & 1 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let (header, claims) = rest.split_at(split);
        signed(header, claims.get(1..).unwrap_or_default())
    };
    let Ok(claims) = KEYS.grants.verify(&token) else {
        return;
    };
    // What signaling's hub reads of a grant before seating its holder.
    let _ = uuid_id(&claims.sub);
    let _ = uuid_id(&claims.room);
    let _ = Role::from(claims.role);
    let again = block_on(KEYS.grants.issue(&claims)).expect("issuing verified claims");
    let verified = KEYS
        .grants
        .verify(&again)
        .expect("a grant just issued verifies");
    assert_eq!(verified, claims, "claims survive issue and verify");
});
