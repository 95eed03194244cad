//! Authentication schemes and ACL checks, as ZooKeeper's auth providers and
//! `checkACL` define them: `world:anyone`, `auth` (the session's authenticated
//! ids), `digest` (user:base64(sha1(user:password))), `ip` (address or
//! address/prefix) and the `super` digest that bypasses every ACL.

use crate::proto::codes::perms;
use crate::proto::{Acl, ErrorCode, Id};

/// SHA-1 (FIPS 180-4). Only the digest scheme needs it, on addAuth; a few
/// dozen lines here beat a dependency.
pub fn sha1(message: &[u8]) -> [u8; 20] {
    let mut state: [u32; 5] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476, 0xc3d2_e1f0];
    let mut padded = message.to_vec();
    padded.push(0x80);
    while padded.len() % 64 != 56 {
        padded.push(0);
    }
    padded.extend_from_slice(&((message.len() as u64) * 8).to_be_bytes());
    for block in padded.chunks(64) {
        let mut words = [0u32; 80];
        for (index, word) in block.chunks(4).enumerate() {
            words[index] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for index in 16..80 {
            words[index] = (words[index - 3] ^ words[index - 8] ^ words[index - 14] ^ words[index - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = state;
        for (index, word) in words.iter().enumerate() {
            let (f, k) = match index {
                0..=19 => ((b & c) | (!b & d), 0x5a82_7999),
                20..=39 => (b ^ c ^ d, 0x6ed9_eba1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8f1b_bcdc),
                _ => (b ^ c ^ d, 0xca62_c1d6),
            };
            let temp = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(*word);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = temp;
        }
        for (slot, value) in state.iter_mut().zip([a, b, c, d, e]) {
            *slot = slot.wrapping_add(value);
        }
    }
    let mut digest = [0u8; 20];
    for (chunk, word) in digest.chunks_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    digest
}

/// Standard base64 with padding (what Java's Base64 encoder produces).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let triple = (chunk[0] as u32) << 16 | (*chunk.get(1).unwrap_or(&0) as u32) << 8 | *chunk.get(2).unwrap_or(&0) as u32;
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(ALPHABET[(triple >> (18 - 6 * index) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `user:password` -> `user:base64(sha1(user:password))` (DigestAuthenticationProvider.generateDigest).
pub fn digest_id(user_password: &str) -> String {
    let user = user_password.split(':').next().unwrap_or("");
    format!("{user}:{}", base64(&sha1(user_password.as_bytes())))
}

pub fn world_anyone() -> Id {
    Id { scheme: "world".into(), id: "anyone".into() }
}

/// The outcome of an AuthPacket (addAuth).
pub enum AuthOutcome {
    /// Ids to add to the connection's auth info.
    Added(Vec<Id>),
    /// Unknown scheme or bad credentials: ZooKeeper answers AUTHFAILED and closes.
    Failed,
}

/// Handles addAuth for the schemes warden supports.
pub fn authenticate(scheme: &str, auth: &[u8], super_digest: Option<&str>) -> AuthOutcome {
    match scheme {
        "digest" => {
            let Ok(user_password) = std::str::from_utf8(auth) else {
                return AuthOutcome::Failed;
            };
            let id = digest_id(user_password);
            let mut ids = vec![Id { scheme: "digest".into(), id: id.clone() }];
            if super_digest == Some(id.as_str()) {
                ids.push(Id { scheme: "super".into(), id: String::new() });
            }
            AuthOutcome::Added(ids)
        }
        _ => AuthOutcome::Failed,
    }
}

/// Whether an `ip` ACL id (`a.b.c.d` or `a.b.c.d/bits`, IPv6 too) matches `address`.
fn ip_matches(acl_id: &str, address: &str) -> bool {
    let (network, bits) = match acl_id.split_once('/') {
        Some((network, bits)) => (network, bits.parse::<u32>().ok()),
        None => (acl_id, None),
    };
    let (Ok(network), Ok(address)) = (network.parse::<std::net::IpAddr>(), address.parse::<std::net::IpAddr>()) else {
        return false;
    };
    let (network, address, width): (u128, u128, u32) = match (network, address) {
        (std::net::IpAddr::V4(n), std::net::IpAddr::V4(a)) => (u32::from(n) as u128, u32::from(a) as u128, 32),
        (std::net::IpAddr::V6(n), std::net::IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
        _ => return false,
    };
    let bits = bits.unwrap_or(width).min(width);
    if bits == 0 {
        return true;
    }
    let shift = width - bits;
    (network >> shift) == (address >> shift)
}

fn ip_id_is_valid(acl_id: &str) -> bool {
    let (network, bits) = match acl_id.split_once('/') {
        Some((network, bits)) => (network, Some(bits)),
        None => (acl_id, None),
    };
    let Ok(address) = network.parse::<std::net::IpAddr>() else { return false };
    let width = if address.is_ipv4() { 32 } else { 128 };
    bits.is_none_or(|bits| bits.parse::<u32>().is_ok_and(|bits| bits <= width))
}

/// checkACL: whether `auth_ids` grant `permission` on a node with `acl`.
pub fn check_acl(acl: &[Acl], permission: i32, auth_ids: &[Id]) -> Result<(), ErrorCode> {
    if auth_ids.iter().any(|id| id.scheme == "super") || acl.is_empty() {
        return Ok(());
    }
    for entry in acl {
        if entry.perms & permission == 0 {
            continue;
        }
        let id = &entry.id;
        if id.scheme == "world" && id.id == "anyone" {
            return Ok(());
        }
        for auth in auth_ids.iter().filter(|auth| auth.scheme == id.scheme) {
            let matches = match id.scheme.as_str() {
                "ip" => ip_matches(&id.id, &auth.id),
                _ => auth.id == id.id,
            };
            if matches {
                return Ok(());
            }
        }
    }
    Err(ErrorCode::NoAuth)
}

/// fixupACL: expands `auth` entries to the session's authenticated ids,
/// validates the others, removes duplicates. Empty or invalid: INVALIDACL.
pub fn fixup_acl(acl: &[Acl], auth_ids: &[Id]) -> Result<Vec<Acl>, ErrorCode> {
    if acl.is_empty() {
        return Err(ErrorCode::InvalidAcl);
    }
    let mut fixed: Vec<Acl> = Vec::with_capacity(acl.len());
    let push = |entry: Acl, fixed: &mut Vec<Acl>| {
        if !fixed.contains(&entry) {
            fixed.push(entry);
        }
    };
    for entry in acl {
        if entry.perms & !perms::ALL != 0 && entry.perms < 0 {
            return Err(ErrorCode::InvalidAcl);
        }
        match entry.id.scheme.as_str() {
            "world" if entry.id.id == "anyone" => push(entry.clone(), &mut fixed),
            "auth" => {
                // Only authenticated schemes (digest, super) count; ip does not.
                let mut any = false;
                for id in auth_ids.iter().filter(|id| id.scheme == "digest") {
                    push(Acl { perms: entry.perms, id: id.clone() }, &mut fixed);
                    any = true;
                }
                if !any {
                    return Err(ErrorCode::InvalidAcl);
                }
            }
            "digest" if entry.id.id.split(':').count() == 2 => push(entry.clone(), &mut fixed),
            "ip" if ip_id_is_valid(&entry.id.id) => push(entry.clone(), &mut fixed),
            _ => return Err(ErrorCode::InvalidAcl),
        }
    }
    Ok(fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_and_base64_match_known_vectors() {
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(&sha1(b"abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            hex(&sha1(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }

    #[test]
    fn digest_matches_zookeeper_generate_digest() {
        // Checked against Apache ZooKeeper 3.8: DigestAuthenticationProvider super:superpw.
        assert_eq!(digest_id("super:superpw"), "super:g9oN2HttPfn8MMWJZ2r45Np/LIA=");
    }

    #[test]
    fn acl_checks() {
        let user = Id { scheme: "digest".into(), id: digest_id("u:p") };
        let acl = vec![Acl { perms: perms::READ, id: user.clone() }];
        assert_eq!(check_acl(&acl, perms::READ, &[]), Err(ErrorCode::NoAuth));
        assert_eq!(check_acl(&acl, perms::READ, &[user.clone()]), Ok(()));
        assert_eq!(check_acl(&acl, perms::WRITE, &[user.clone()]), Err(ErrorCode::NoAuth));
        let superuser = Id { scheme: "super".into(), id: String::new() };
        assert_eq!(check_acl(&acl, perms::WRITE, &[superuser]), Ok(()));
        let ip_acl = vec![Acl { perms: perms::ALL, id: Id { scheme: "ip".into(), id: "127.0.0.0/8".into() } }];
        let local = Id { scheme: "ip".into(), id: "127.0.0.1".into() };
        let remote = Id { scheme: "ip".into(), id: "10.0.0.1".into() };
        assert_eq!(check_acl(&ip_acl, perms::READ, &[local]), Ok(()));
        assert_eq!(check_acl(&ip_acl, perms::READ, &[remote]), Err(ErrorCode::NoAuth));
    }

    #[test]
    fn fixup_expands_auth_and_rejects_invalid() {
        let user = Id { scheme: "digest".into(), id: digest_id("u:p") };
        let auth = vec![Acl { perms: perms::ALL, id: Id { scheme: "auth".into(), id: String::new() } }];
        assert_eq!(fixup_acl(&auth, &[]), Err(ErrorCode::InvalidAcl));
        assert_eq!(fixup_acl(&auth, &[user.clone()]), Ok(vec![Acl { perms: perms::ALL, id: user }]));
        assert_eq!(fixup_acl(&[], &[]), Err(ErrorCode::InvalidAcl));
        let bad = vec![Acl { perms: 1, id: Id { scheme: "world".into(), id: "someone".into() } }];
        assert_eq!(fixup_acl(&bad, &[]), Err(ErrorCode::InvalidAcl));
        let dup = vec![Acl { perms: 31, id: world_anyone() }, Acl { perms: 31, id: world_anyone() }];
        assert_eq!(fixup_acl(&dup, &[]).unwrap().len(), 1);
    }
}
