//! Signed hosts documents (`--hosts-pubkey`): whether a document and its detached minisign
//! signature may be applied. Pure: the caller reads the files or fetches the URLs and passes the
//! time; this module decodes the signature, verifies it under the configured keys (with the
//! `minisign-verify` crate), reads the signed timestamp from the trusted comment and refuses a
//! document older than the one in force (rollback) or signed too long ago (`--hosts-max-age`).

use std::fmt;
use std::time::Duration;

use minisign_verify::{Error as MinisignError, PublicKey, Signature};

/// The largest signature or public key file read: minisign's are a few hundred bytes (a long
/// trusted comment included), so anything larger is not one, and costs no more than this.
pub const MAX_FILE_BYTES: usize = 4096;

/// What the signature file of a document is called: its name (or its URL's path) plus this.
pub const SUFFIX: &str = ".minisig";

/// Why a signed document was refused: each reason has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No signature, one that does not verify, one by another key, or no signed timestamp.
    Signature,
    /// Signed earlier than the document whose table is in force: an old one served again.
    Rollback,
    /// Signed longer ago than `--hosts-max-age`: a publisher re-signs on a schedule.
    Stale,
}

impl Reason {
    /// Every reason, in counter order.
    pub const ALL: [Reason; 3] = [Reason::Signature, Reason::Rollback, Reason::Stale];

    /// A stable name for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Signature => "signature",
            Reason::Rollback => "rollback",
            Reason::Stale => "stale",
        }
    }
}

/// A refused document: the reason and what to tell the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Why, for the counters.
    pub reason: Reason,
    message: String,
}

impl Refusal {
    fn new(reason: Reason, message: String) -> Self {
        Self { reason, message }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused: {}", self.message)
    }
}

impl std::error::Error for Refusal {}

/// The keys a document may be signed with, and how old its signature may be.
#[derive(Clone, Debug)]
pub struct Policy {
    keys: Vec<PublicKey>,
    max_age: Option<Duration>,
}

impl Policy {
    /// A policy that accepts a signature by any of `keys` (more than one during a key
    /// rotation) made at most `max_age` ago, if given.
    pub fn new(keys: Vec<PublicKey>, max_age: Option<Duration>) -> Self {
        Self { keys, max_age }
    }

    /// Decides whether `document` may be applied, given its signature file's bytes (`None`
    /// when there is none) found at `signature_at` (named in messages), the signed timestamp
    /// of the table in force (`in_force`) and the time (`now`, Unix seconds). Returns the
    /// document's signed timestamp, its version from now on.
    pub fn check(
        &self,
        document: &[u8],
        signature: Option<&[u8]>,
        signature_at: &str,
        in_force: Option<u64>,
        now: u64,
    ) -> Result<u64, Refusal> {
        let refused = |message: String| Refusal::new(Reason::Signature, message);
        let signature = signature.ok_or_else(|| refused(format!("no signature at {signature_at}")))?;
        let parsed = parse(signature).map_err(|e| refused(format!("signature {signature_at}: {e}")))?;
        self.verify(document, &parsed.signature)
            .map_err(|e| refused(format!("signature {signature_at}: {e}")))?;
        let signed = parsed.timestamp.map_err(|e| refused(format!("signature {signature_at}: {e}")))?;
        judge(signed, in_force, self.max_age, now)?;
        Ok(signed)
    }

    /// Whether the document in force, signed at `in_force`, is now older than the max age: its
    /// server is then asked for the document whole (not whether it changed), so that one signed
    /// again is seen, and a stale one is refused and logged at every fetch.
    pub fn outlived(&self, in_force: Option<u64>, now: u64) -> bool {
        in_force.is_some_and(|signed| judge(signed, None, self.max_age, now).is_err())
    }

    /// Verifies `signature` of `document` under any of the keys.
    fn verify(&self, document: &[u8], signature: &Signature) -> Result<(), String> {
        let mut other_key = true;
        for key in &self.keys {
            match key.verify(document, signature, false) {
                Ok(()) => return Ok(()),
                Err(MinisignError::UnexpectedKeyId) => {}
                Err(_) => other_key = false,
            }
        }
        Err(if other_key {
            "made by another key than --hosts-pubkey's".to_string()
        } else {
            "does not verify under --hosts-pubkey: the document or its signature was changed".to_string()
        })
    }
}

/// Reads a public key file as `minisign -G` writes it (an untrusted comment line, then the key
/// in base64); `origin` names it in errors.
pub fn parse_public_key(text: &[u8], origin: &str) -> Result<PublicKey, String> {
    if text.len() > MAX_FILE_BYTES {
        return Err(format!("{origin}: larger than {MAX_FILE_BYTES} bytes: not a minisign public key"));
    }
    let text =
        std::str::from_utf8(text).map_err(|_| format!("{origin}: not a minisign public key (not text)"))?;
    PublicKey::decode(text).map_err(|e| format!("{origin}: not a minisign public key ({e})"))
}

/// A signature file, decoded but not verified.
pub struct Parsed {
    /// The signature itself.
    pub signature: Signature,
    /// The `timestamp:` of its trusted comment, or why it has none (an error only once the
    /// signature verifies: until then the comment is not known to be the signer's).
    pub timestamp: Result<u64, String>,
}

/// Decodes a minisign signature file (at most [`MAX_FILE_BYTES`]): the untrusted comment, the
/// signature, the trusted comment and the global signature, each on its line.
pub fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes: not a minisign signature"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "not a minisign signature (not text)".to_string())?;
    let signature = Signature::decode(text).map_err(|e| format!("not a minisign signature ({e})"))?;
    let timestamp = timestamp(signature.trusted_comment());
    Ok(Parsed { signature, timestamp })
}

/// The signed time in a trusted comment: its one `timestamp:` field, in decimal Unix seconds.
/// minisign writes `timestamp:T<TAB>file:NAME<TAB>hashed` by default; a comment given with `-t`
/// may separate its fields with spaces.
pub fn timestamp(trusted_comment: &str) -> Result<u64, String> {
    let mut found =
        trusted_comment.split_ascii_whitespace().filter_map(|field| field.strip_prefix("timestamp:"));
    let first = found.next();
    let shown = || trusted_comment.chars().take(80).collect::<String>();
    match (first, found.next()) {
        (None, _) => Err(format!("its trusted comment has no timestamp: field (`{}`)", shown())),
        (Some(_), Some(_)) => Err(format!("its trusted comment has two timestamp: fields (`{}`)", shown())),
        (Some(digits), None) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            digits.parse().map_err(|_| format!("its timestamp `{digits}` is out of range"))
        }
        (Some(other), None) => Err(format!("its timestamp `{other}` is not a number of seconds")),
    }
}

/// The rollback and age rules for a document signed at `signed`: refused if the table in force
/// was signed later (the same time is the same document fetched again, or one re-signed within
/// the second), or if it was signed longer than `max_age` before `now`. A time ahead of `now`
/// (the signer's clock) is not refused.
pub fn judge(signed: u64, in_force: Option<u64>, max_age: Option<Duration>, now: u64) -> Result<(), Refusal> {
    if let Some(in_force) = in_force.filter(|&in_force| signed < in_force) {
        return Err(Refusal::new(
            Reason::Rollback,
            format!(
                "signed at {signed}, {} s before the table in force (signed at {in_force}): an older \
                 document served again (rollback)",
                in_force - signed
            ),
        ));
    }
    let age = now.saturating_sub(signed);
    if let Some(max_age) = max_age.filter(|&max_age| Duration::from_secs(age) > max_age) {
        return Err(Refusal::new(
            Reason::Stale,
            format!(
                "signed {age} s ago (at {signed}), longer ago than --hosts-max-age {} s",
                max_age.as_secs_f64()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with minisign 0.11: `minisign -G -W -p pub -s sec`, `minisign -S -s sec -m doc`, the
    // second with `-t "timestamp:1700000000 file:hosts.json"`, the third by another key.
    const PUBLIC_KEY: &str = "untrusted comment: minisign public key 95480C7DBB34C917\n\
        RWQXyTS7fQxIld4HebWKrr1K6Wqa3/X1izG68R1rxEA+4YD/gf9Fux8s\n";
    const DOCUMENT: &str = "{ \"nodes\": { \"192.168.100.2\": { \"host\": \"10.100.0.2\" } } }\n";
    const SIGNED_BY_DEFAULT: &str = "untrusted comment: signature from minisign secret key\n\
        RUQXyTS7fQxIlSaIbZy93U2McssoCU5EkA+5P/IlawuZKnFwYpadLnI1E/ZH2SjOrtOg3k468+k00B3eVtrblA2KR0ozSGPBvQs=\n\
        trusted comment: timestamp:1795720626\tfile:doc\thashed\n\
        o9OTqBRUoGSCroXc/nfgXICqNiiL4R2mILYIVFLmVNQ1u+D0Cg6qavLJDxwRx3pqNhIOHoHYSQGLHn6CJlO4Ag==\n";
    const SIGNED_WITH_COMMENT: &str = "untrusted comment: signature from minisign secret key\n\
        RUQXyTS7fQxIlSaIbZy93U2McssoCU5EkA+5P/IlawuZKnFwYpadLnI1E/ZH2SjOrtOg3k468+k00B3eVtrblA2KR0ozSGPBvQs=\n\
        trusted comment: timestamp:1700000000 file:hosts.json\n\
        BHTwULbintUiLJQomBwjtayrF4ZcYvx39cijETWs9DNMN3mOhmqEaqkp6FJtZ2mfA0QVhSXD0gyKO0B2zSTTDA==\n";
    const SIGNED_BY_ANOTHER_KEY: &str = "untrusted comment: signature from minisign secret key\n\
        RUSbjNi6HSc2dzLiVt7Tiz0YqYN1nv5iGG1sAxitLOQJE+5R8jX0pqwQQRhZc6Yl8sS/Sf2q1EmuxrgVbvE56YAiqwtaRKg3eQg=\n\
        trusted comment: timestamp:1795720626\tfile:doc\thashed\n\
        JDm3gMhqgpUkBnPHJTwGJ4h7YoXY3FaUn1zk8+yOrJObgP5RJgxuDvx5a0BHTe/Mls9rAmJXET+ys0/fBBeHDA==\n";
    const OTHER_PUBLIC_KEY: &str = "untrusted comment: minisign public key 7736271DBAD88C9B\n\
        RWSbjNi6HSc2d6YYDbuZRB8N6n5S6xlS/7vjduFmzB7zVTtbgBIRxR98\n";
    const SIGNED_AT: u64 = 1_795_720_626;

    fn policy(max_age: Option<u64>) -> Policy {
        let key = parse_public_key(PUBLIC_KEY.as_bytes(), "pub").unwrap();
        Policy::new(vec![key], max_age.map(Duration::from_secs))
    }

    fn check(
        policy: &Policy,
        document: &str,
        signature: Option<&str>,
        in_force: Option<u64>,
    ) -> Result<u64, Refusal> {
        policy.check(
            document.as_bytes(),
            signature.map(str::as_bytes),
            "doc.minisig",
            in_force,
            SIGNED_AT + 10,
        )
    }

    #[test]
    fn trusted_comments_give_their_one_timestamp() {
        assert_eq!(timestamp("timestamp:1795720626\tfile:doc\thashed"), Ok(1_795_720_626));
        assert_eq!(timestamp("timestamp:1700000000 file:hosts.json"), Ok(1_700_000_000));
        assert_eq!(timestamp("file:hosts.json timestamp:0"), Ok(0));
        for (comment, error) in [
            ("file:doc\thashed", "has no timestamp: field"),
            ("", "has no timestamp: field"),
            ("Timestamp:5", "has no timestamp: field"),
            ("timestamp:1 timestamp:2", "two timestamp: fields"),
            ("timestamp: 5", "timestamp `` is not a number"),
            ("timestamp:-5", "timestamp `-5` is not a number"),
            ("timestamp:+5", "timestamp `+5` is not a number"),
            ("timestamp:5s", "timestamp `5s` is not a number"),
            ("timestamp:18446744073709551616", "`18446744073709551616` is out of range"),
        ] {
            let found = timestamp(comment).unwrap_err();
            assert!(found.contains(error), "{comment:?}: {found}");
        }
        assert_eq!(timestamp("timestamp:18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn an_older_document_is_a_rollback_and_the_same_or_a_newer_one_is_not() {
        assert_eq!(judge(100, None, None, 0), Ok(()));
        assert_eq!(judge(100, Some(100), None, 0), Ok(()), "the same document fetched again");
        assert_eq!(judge(101, Some(100), None, 0), Ok(()));
        let refusal = judge(99, Some(100), None, 0).unwrap_err();
        assert_eq!(refusal.reason, Reason::Rollback);
        assert!(refusal.to_string().contains("signed at 99, 1 s before the table in force"), "{refusal}");
    }

    #[test]
    fn a_document_signed_longer_ago_than_the_max_age_is_stale() {
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(judge(10_000 - 3600, None, hour, 10_000), Ok(()), "exactly the max age");
        let refusal = judge(10_000 - 3601, None, hour, 10_000).unwrap_err();
        assert_eq!(refusal.reason, Reason::Stale);
        assert!(refusal.to_string().contains("signed 3601 s ago"), "{refusal}");
        assert_eq!(judge(0, None, None, 10_000), Ok(()), "no max age, no limit");
        assert_eq!(judge(20_000, None, hour, 10_000), Ok(()), "a signer's clock ahead");
        // Rollback is told first: it is the attack.
        assert_eq!(judge(1, Some(2), hour, 10_000).unwrap_err().reason, Reason::Rollback);
    }

    #[test]
    fn real_minisign_signatures_verify_and_changes_do_not() {
        let policy = policy(None);
        assert_eq!(check(&policy, DOCUMENT, Some(SIGNED_BY_DEFAULT), None), Ok(SIGNED_AT));
        assert_eq!(check(&policy, DOCUMENT, Some(SIGNED_WITH_COMMENT), None), Ok(1_700_000_000));
        let refused = |document: &str, signature: Option<&str>| {
            let refusal = check(&policy, document, signature, None).unwrap_err();
            assert_eq!(refusal.reason, Reason::Signature, "{refusal}");
            refusal.to_string()
        };
        let changed = DOCUMENT.replace("10.100.0.2", "10.100.0.9");
        assert!(
            refused(&changed, Some(SIGNED_BY_DEFAULT)).contains("signature doc.minisig: does not verify")
        );
        // The trusted comment is signed too: a later timestamp written in does not verify.
        let moved_on = SIGNED_BY_DEFAULT.replace("1795720626", "1795720999");
        assert!(refused(DOCUMENT, Some(&moved_on)).contains("does not verify"));
        assert!(refused(DOCUMENT, Some(SIGNED_BY_ANOTHER_KEY)).contains("made by another key"));
        assert_eq!(refused(DOCUMENT, None), "refused: no signature at doc.minisig");
        assert!(refused(DOCUMENT, Some("<html>404</html>")).contains("not a minisign signature"));
        let long = "x".repeat(MAX_FILE_BYTES + 1);
        assert!(refused(DOCUMENT, Some(&long)).contains("larger than 4096 bytes"));
    }

    #[test]
    fn either_of_two_keys_verifies_during_a_rotation() {
        let old = parse_public_key(PUBLIC_KEY.as_bytes(), "old.pub").unwrap();
        let new = parse_public_key(OTHER_PUBLIC_KEY.as_bytes(), "new.pub").unwrap();
        let both = Policy::new(vec![new.clone(), old], None);
        assert_eq!(check(&both, DOCUMENT, Some(SIGNED_BY_DEFAULT), None), Ok(SIGNED_AT));
        assert_eq!(check(&both, DOCUMENT, Some(SIGNED_BY_ANOTHER_KEY), None), Ok(SIGNED_AT));
        let refusal = check(&Policy::new(vec![new], None), DOCUMENT, Some(SIGNED_BY_DEFAULT), None);
        assert!(refusal.unwrap_err().to_string().contains("made by another key"));
    }

    #[test]
    fn a_table_in_force_outlives_only_a_max_age() {
        let day = policy(Some(86_400));
        assert!(!day.outlived(None, 1_000_000), "nothing signed in force");
        assert!(!day.outlived(Some(1_000_000 - 86_400), 1_000_000));
        assert!(day.outlived(Some(1_000_000 - 86_401), 1_000_000));
        assert!(!policy(None).outlived(Some(0), 1_000_000), "no max age");
    }

    #[test]
    fn the_rules_apply_to_verified_documents() {
        let policy = policy(Some(5));
        let refusal = check(&policy, DOCUMENT, Some(SIGNED_BY_DEFAULT), None).unwrap_err();
        assert_eq!(refusal.reason, Reason::Stale, "signed 10 s before now");
        let refusal =
            check(&self::policy(None), DOCUMENT, Some(SIGNED_BY_DEFAULT), Some(SIGNED_AT + 1)).unwrap_err();
        assert_eq!(refusal.reason, Reason::Rollback);
    }

    #[test]
    fn public_keys_are_read_as_minisign_writes_them() {
        assert!(parse_public_key(PUBLIC_KEY.as_bytes(), "pub").is_ok());
        let error = parse_public_key(b"RWQXyTS7fQxIld4HebWKrr1K6Wqa3/X1izG68R1rxEA+4YD/gf9Fux8s\n", "k.pub")
            .unwrap_err();
        assert!(error.starts_with("k.pub: not a minisign public key"), "{error}");
        assert!(parse_public_key(&[0xff, 0xfe], "k.pub").is_err());
        assert!(
            parse_public_key("a\n".repeat(3000).as_bytes(), "k.pub").unwrap_err().contains("larger than")
        );
    }
}
