//! The backup archive: a gzip'd tar whose first member, `manifest.json`,
//! lists every other member with its size and sha256 (of the bytes as
//! stored), so a damaged or truncated archive is found, naming the member,
//! before anything is restored and without the passphrase. Secret members
//! are encrypted with ChaCha20-Poly1305 in the STREAM construction (64 KiB
//! chunks, so a large Vault snapshot never sits in memory whole) under a key
//! scrypt derives from the passphrase; the same derivation gives the key of
//! an HMAC over the manifest, so a wrong passphrase, or a manifest edited
//! to match altered plain members, is refused before anything is decrypted.
//! Knows nothing of Nautes: it packs and checks the files it is given.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};
use chacha20poly1305::aead::{KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::secret::Secret;
use crate::util::hex;

pub const FORMAT: u32 = 1;
pub const MANIFEST: &str = "manifest.json";
/// Plaintext bytes per encrypted chunk; each chunk carries a 16-byte tag.
const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
/// STREAM's per-member nonce prefix (12-byte nonce less the 5-byte counter).
const NONCE_PREFIX: usize = 7;
/// A manifest is a few KiB; anything far larger is not one of ours.
const MANIFEST_LIMIT: u64 = 16 << 20;

/// scrypt's cost: N = 2^15, r = 8, p = 1 (32 MiB, a fraction of a second),
/// the interactive-login setting recommended by scrypt's author and age.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Kdf {
    pub algorithm: String,
    pub log_n: u8,
    pub r: u32,
    pub p: u32,
    /// Hex of 16 random bytes.
    pub salt: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// Relative path inside the archive (`state.json`, `outputs/…`).
    pub path: String,
    /// Size as stored (for encrypted members: of the ciphertext).
    pub size: u64,
    /// sha256 of the bytes as stored.
    pub sha256: String,
    pub encrypted: bool,
    /// File mode to restore it with.
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: u32,
    pub created: String,
    pub installer_version: String,
    pub kdf: Kdf,
    pub members: Vec<Member>,
    /// HMAC-SHA256 (hex) of this manifest with `mac` empty, keyed by the passphrase.
    #[serde(default)]
    pub mac: String,
}

/// The keys scrypt derives from a passphrase and a salt.
pub struct Keys {
    cipher: [u8; 32],
    mac: [u8; 32],
}

fn random(n: usize) -> std::io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Kdf {
    pub fn fresh() -> std::io::Result<Kdf> {
        Ok(Kdf {
            algorithm: "scrypt".into(),
            log_n: 15,
            r: 8,
            p: 1,
            salt: hex(&random(16)?),
        })
    }

    pub fn derive(&self, passphrase: &Secret) -> Result<Keys, String> {
        if self.algorithm != "scrypt" {
            return Err(format!("unknown key derivation `{}`", self.algorithm));
        }
        // Bounds keep a crafted manifest from asking for gigabytes.
        if !(10..=20).contains(&self.log_n) || self.r == 0 || self.r > 32 || self.p == 0 || self.p > 16 {
            return Err("the manifest's scrypt parameters are out of range".into());
        }
        let salt = unhex(&self.salt).ok_or("the manifest's salt is not hex")?;
        let params = scrypt::Params::new(self.log_n, self.r, self.p, 64).map_err(|e| e.to_string())?;
        let mut out = [0u8; 64];
        scrypt::scrypt(passphrase.expose().as_bytes(), &salt, &params, &mut out).map_err(|e| e.to_string())?;
        let mut keys = Keys {
            cipher: [0; 32],
            mac: [0; 32],
        };
        keys.cipher.copy_from_slice(&out[..32]);
        keys.mac.copy_from_slice(&out[32..]);
        Ok(keys)
    }
}

impl Manifest {
    /// HMAC of the manifest as serialised with `mac` empty.
    fn hmac(&self, keys: &Keys) -> Hmac<Sha256> {
        let mut unsigned = self.clone();
        unsigned.mac.clear();
        let bytes = serde_json::to_vec(&unsigned).unwrap_or_default();
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&keys.mac).expect("HMAC takes any key length");
        mac.update(&bytes);
        mac
    }

    pub fn sign(&mut self, keys: &Keys) {
        self.mac = hex(&self.hmac(keys).finalize().into_bytes());
    }

    /// Whether the passphrase is the one the archive was made with and the
    /// manifest is as it was written (compared in constant time).
    pub fn authentic(&self, keys: &Keys) -> bool {
        unhex(&self.mac).is_some_and(|tag| self.hmac(keys).verify_slice(&tag).is_ok())
    }

    /// Problems with the manifest itself: a format we do not read, member
    /// paths that could escape the restore directory, duplicates.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.format != FORMAT {
            out.push(format!(
                "archive format {} (this installer reads format {FORMAT})",
                self.format
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &self.members {
            let p = Path::new(&m.path);
            let safe =
                !m.path.is_empty() && m.path != MANIFEST && p.components().all(|c| matches!(c, Component::Normal(_)));
            if !safe {
                out.push(format!("member `{}`: not a plain relative path", m.path));
            }
            if !seen.insert(&m.path) {
                out.push(format!("member `{}` is listed twice", m.path));
            }
        }
        out
    }

    pub fn member(&self, path: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.path == path)
    }
}

/// What was found for one member while reading the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub size: u64,
    pub sha256: String,
}

/// Compare what the archive held with what its manifest lists: every
/// member present once, with its size and sha256. One message per problem,
/// each naming the member.
pub fn verify_members(manifest: &Manifest, seen: &BTreeMap<String, Seen>) -> Vec<String> {
    let mut out = Vec::new();
    for m in &manifest.members {
        match seen.get(&m.path) {
            None => out.push(format!("member `{}` is listed in the manifest but missing", m.path)),
            Some(s) if s.size != m.size => out.push(format!(
                "member `{}` is {} bytes, the manifest says {} (truncated or altered)",
                m.path, s.size, m.size
            )),
            Some(s) if s.sha256 != m.sha256 => out.push(format!(
                "member `{}` does not match its sha256 in the manifest (altered or corrupt)",
                m.path
            )),
            Some(_) => {}
        }
    }
    for path in seen.keys() {
        if manifest.member(path).is_none() {
            out.push(format!("member `{path}` is not listed in the manifest"));
        }
    }
    out
}

/// A writer that hashes and counts what passes through it.
pub struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    pub size: u64,
}

impl<W: Write> Hashing<W> {
    pub fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    pub fn finish(self) -> (W, Seen) {
        let seen = Seen {
            size: self.size,
            sha256: hex(&self.hasher.finalize()),
        };
        (self.inner, seen)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn crypto_error(what: &str) -> std::io::Error {
    std::io::Error::other(what.to_string())
}

/// Encrypts what is written to it into `inner`: the nonce prefix, then
/// full chunks as they fill, and the last (possibly empty) chunk on
/// [`Encrypting::finish`]. The member's path is authenticated with every
/// chunk, so members cannot be swapped.
pub struct Encrypting<W: Write> {
    inner: W,
    stream: Option<EncryptorBE32<ChaCha20Poly1305>>,
    buf: Vec<u8>,
    aad: Vec<u8>,
}

impl<W: Write> Encrypting<W> {
    pub fn new(mut inner: W, keys: &Keys, member: &str) -> std::io::Result<Self> {
        let prefix = random(NONCE_PREFIX)?;
        inner.write_all(&prefix)?;
        let cipher = ChaCha20Poly1305::new((&keys.cipher).into());
        let stream = EncryptorBE32::from_aead(cipher, prefix.as_slice().into());
        Ok(Encrypting {
            inner,
            stream: Some(stream),
            buf: Vec::with_capacity(CHUNK),
            aad: member.as_bytes().to_vec(),
        })
    }

    pub fn finish(mut self) -> std::io::Result<W> {
        let stream = self.stream.take().ok_or_else(|| crypto_error("finished twice"))?;
        let last = stream
            .encrypt_last(Payload {
                msg: &self.buf,
                aad: &self.aad,
            })
            .map_err(|_| crypto_error("encryption failed"))?;
        self.inner.write_all(&last)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Encrypting<W> {
    fn write(&mut self, mut data: &[u8]) -> std::io::Result<usize> {
        let total = data.len();
        while !data.is_empty() {
            // A full chunk is sealed only once more data comes: the last
            // chunk must be sealed as the last.
            if self.buf.len() == CHUNK {
                let stream = self.stream.as_mut().ok_or_else(|| crypto_error("write after finish"))?;
                let sealed = stream
                    .encrypt_next(Payload {
                        msg: &self.buf,
                        aad: &self.aad,
                    })
                    .map_err(|_| crypto_error("encryption failed"))?;
                self.inner.write_all(&sealed)?;
                self.buf.clear();
            }
            let take = (CHUNK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(total)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decrypt an encrypted member of `len` bytes read from `input` into
/// `out`. Fails on a wrong key, any altered byte, a reordered, dropped or
/// appended chunk, or a member stored under another path.
pub fn decrypt(keys: &Keys, member: &str, mut input: impl Read, len: u64, mut out: impl Write) -> Result<u64, String> {
    let bad = || format!("member `{member}` cannot be decrypted (wrong passphrase, or altered)");
    let body = len.checked_sub((NONCE_PREFIX + TAG) as u64).ok_or_else(bad)?;
    let full_chunks = body / (CHUNK + TAG) as u64;
    let mut prefix = [0u8; NONCE_PREFIX];
    input
        .read_exact(&mut prefix)
        .map_err(|e| format!("member `{member}`: {e}"))?;
    let cipher = ChaCha20Poly1305::new((&keys.cipher).into());
    let mut stream = DecryptorBE32::from_aead(cipher, (&prefix).into());
    let mut buf = vec![0u8; CHUNK + TAG];
    let mut written = 0u64;
    let aad = member.as_bytes();
    for _ in 0..full_chunks {
        input
            .read_exact(&mut buf)
            .map_err(|e| format!("member `{member}`: {e}"))?;
        let plain = stream.decrypt_next(Payload { msg: &buf, aad }).map_err(|_| bad())?;
        out.write_all(&plain).map_err(|e| format!("member `{member}`: {e}"))?;
        written += plain.len() as u64;
    }
    let rest = (body - full_chunks * (CHUNK + TAG) as u64) as usize + TAG;
    let mut last = vec![0u8; rest];
    input
        .read_exact(&mut last)
        .map_err(|e| format!("member `{member}`: {e}"))?;
    let plain = stream.decrypt_last(Payload { msg: &last, aad }).map_err(|_| bad())?;
    out.write_all(&plain).map_err(|e| format!("member `{member}`: {e}"))?;
    Ok(written + plain.len() as u64)
}

/// Writes the archive: the manifest first, then each member's stored bytes
/// from a file (members are staged, and hashed, before the archive is written).
pub fn write_archive(out: impl Write, manifest: &Manifest, staged: &BTreeMap<String, PathBuf>) -> std::io::Result<()> {
    // The gzip framing stays (any tar.gz reader opens the archive) but
    // stores without deflating: the bulk — the snapshots — is ciphertext,
    // which does not compress, and deflating it cost ~75 ms per MB (an
    // etcd snapshot's backup took 8x etcdctl's own time).
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::none());
    let mut tar = tar::Builder::new(gz);
    let mtime = crate::util::unix_now();
    let header = |size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o600);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        h
    };
    let bytes = serde_json::to_vec_pretty(manifest).map_err(std::io::Error::other)?;
    tar.append_data(&mut header(bytes.len() as u64), MANIFEST, bytes.as_slice())?;
    for m in &manifest.members {
        let path = staged
            .get(&m.path)
            .ok_or_else(|| std::io::Error::other(format!("member `{}` was not staged", m.path)))?;
        let file = std::fs::File::open(path)?;
        tar.append_data(&mut header(m.size), &m.path, file)?;
    }
    let gz = tar.into_inner()?;
    let mut out = gz.finish()?;
    out.flush()
}

/// Read an archive: its manifest (which must come first and be sound),
/// then every member streamed into `dir` under its path while hashing.
/// Returns the manifest and what was seen; nothing outside `dir` is
/// written. A read error names the member it happened in.
pub fn read_archive(input: impl Read, dir: &Path) -> Result<(Manifest, BTreeMap<String, Seen>), Vec<String>> {
    let gz = flate2::read::GzDecoder::new(input);
    let mut archive = tar::Archive::new(gz);
    let mut entries = archive
        .entries()
        .map_err(|e| vec![format!("not a backup archive: {e}")])?;
    let manifest: Manifest = match entries.next() {
        None => return Err(vec!["the archive is empty (no manifest)".into()]),
        Some(Err(e)) => return Err(vec![format!("not a backup archive (reading its manifest: {e})")]),
        Some(Ok(mut e)) => {
            let path = e.path().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
            if path != MANIFEST {
                return Err(vec![format!("the archive's first member is `{path}`, not {MANIFEST}")]);
            }
            if e.size() > MANIFEST_LIMIT {
                return Err(vec![format!("{MANIFEST} is {} bytes: not a manifest", e.size())]);
            }
            let mut text = Vec::new();
            e.read_to_end(&mut text)
                .map_err(|err| vec![format!("member `{MANIFEST}`: {err}")])?;
            serde_json::from_slice(&text)
                .map_err(|err| vec![format!("member `{MANIFEST}` is not a manifest: {err}")])?
        }
    };
    let problems = manifest.problems();
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut seen = BTreeMap::new();
    let mut last = MANIFEST.to_string();
    for entry in entries {
        let mut e = entry.map_err(|err| vec![format!("the archive is damaged after member `{last}`: {err}")])?;
        let path = e.path().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        if manifest.member(&path).is_none() {
            return Err(vec![format!("member `{path}` is not listed in the manifest")]);
        }
        if seen.contains_key(&path) {
            return Err(vec![format!("member `{path}` appears twice")]);
        }
        let target = dir.join(&path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|err| vec![format!("{}: {err}", parent.display())])?;
        }
        let file = private_file(&target).map_err(|err| vec![format!("{}: {err}", target.display())])?;
        let mut hashing = Hashing::new(file);
        std::io::copy(&mut e, &mut hashing).map_err(|err| vec![format!("member `{path}` cannot be read: {err}")])?;
        let (_, s) = hashing.finish();
        seen.insert(path.clone(), s);
        last = path;
    }
    // Read to the end, so gzip's own checksum and length are checked too.
    let mut gz = archive.into_inner();
    std::io::copy(&mut gz, &mut std::io::sink())
        .map_err(|err| vec![format!("the archive is damaged after member `{last}`: {err}")])?;
    let problems = verify_members(&manifest, &seen);
    if problems.is_empty() {
        Ok((manifest, seen))
    } else {
        Err(problems)
    }
}

/// A new file only its owner can read.
pub fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap_kdf() -> Kdf {
        Kdf {
            log_n: 10,
            ..Kdf::fresh().unwrap()
        }
    }

    fn manifest(members: Vec<Member>) -> Manifest {
        Manifest {
            format: FORMAT,
            created: "2026-01-01T00:00:00Z".into(),
            installer_version: "0.1.0".into(),
            kdf: cheap_kdf(),
            members,
            mac: String::new(),
        }
    }

    fn member(path: &str, bytes: &[u8]) -> Member {
        Member {
            path: path.into(),
            size: bytes.len() as u64,
            sha256: crate::util::sha256_hex(bytes),
            encrypted: false,
            mode: 0o600,
        }
    }

    fn seen(bytes: &[u8]) -> Seen {
        Seen {
            size: bytes.len() as u64,
            sha256: crate::util::sha256_hex(bytes),
        }
    }

    #[test]
    fn verification_names_each_member_that_is_altered_truncated_missing_or_extra() {
        let m = manifest(vec![
            member("state.json", b"{}"),
            member("outputs/vault/root-token", b"s.token"),
            member("outputs/kubeconfig", b"apiVersion: v1"),
            member("inventory/inventory.yaml", b"kind: Inventory"),
        ]);
        let mut found = BTreeMap::new();
        found.insert("state.json".to_string(), seen(b"{}"));
        found.insert("outputs/vault/root-token".to_string(), seen(b"s.tokem"));
        found.insert("outputs/kubeconfig".to_string(), seen(b"apiVersion"));
        found.insert("extra".to_string(), seen(b"x"));
        let problems = verify_members(&m, &found);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("`outputs/vault/root-token`") && problems[0].contains("sha256"));
        assert!(problems[1].contains("`outputs/kubeconfig`") && problems[1].contains("truncated"));
        assert!(problems[2].contains("`inventory/inventory.yaml`") && problems[2].contains("missing"));
        assert!(problems[3].contains("`extra`") && problems[3].contains("not listed"));

        found.insert("outputs/vault/root-token".to_string(), seen(b"s.token"));
        found.insert("outputs/kubeconfig".to_string(), seen(b"apiVersion: v1"));
        found.insert("inventory/inventory.yaml".to_string(), seen(b"kind: Inventory"));
        found.remove("extra");
        assert!(verify_members(&m, &found).is_empty());
    }

    #[test]
    fn a_manifest_with_escaping_or_duplicate_paths_or_another_format_is_refused() {
        let mut m = manifest(vec![
            member("../etc/passwd", b""),
            member("/abs", b""),
            member("a", b""),
            member("a", b""),
            member(MANIFEST, b""),
        ]);
        m.format = 2;
        let problems = m.problems().join("\n");
        for want in [
            "format 2",
            "`../etc/passwd`",
            "`/abs`",
            "`a` is listed twice",
            "`manifest.json`",
        ] {
            assert!(problems.contains(want), "{want} in {problems}");
        }
        assert!(manifest(vec![member("outputs/pki/ca.crt", b"")]).problems().is_empty());
    }

    #[test]
    fn the_manifest_mac_needs_the_passphrase_and_covers_every_field() {
        let mut m = manifest(vec![member("state.json", b"{}")]);
        let keys = m.kdf.derive(&Secret::new("correct horse")).unwrap();
        m.sign(&keys);
        assert!(m.authentic(&keys));
        assert!(!m.authentic(&m.kdf.derive(&Secret::new("wrong horse")).unwrap()));
        let mut edited = m.clone();
        edited.members[0].sha256 = crate::util::sha256_hex(b"{\"steps\":{}}");
        assert!(!edited.authentic(&keys));
    }

    fn roundtrip(len: usize) {
        let keys = cheap_kdf().derive(&Secret::new("pw")).unwrap();
        let plain: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut enc = Encrypting::new(Vec::new(), &keys, "openbao/raft.snap").unwrap();
        // Odd-sized writes cross chunk borders.
        for piece in plain.chunks(10_007) {
            enc.write_all(piece).unwrap();
        }
        let sealed = enc.finish().unwrap();
        let mut out = Vec::new();
        let n = decrypt(
            &keys,
            "openbao/raft.snap",
            sealed.as_slice(),
            sealed.len() as u64,
            &mut out,
        )
        .unwrap();
        assert_eq!(n as usize, len);
        assert_eq!(out, plain, "length {len}");
        // Another member's path, a flipped byte, a dropped last chunk: refused.
        assert!(decrypt(&keys, "outputs/x", sealed.as_slice(), sealed.len() as u64, Vec::new()).is_err());
        let mut flipped = sealed.clone();
        let at = flipped.len() / 2;
        flipped[at] ^= 1;
        assert!(decrypt(
            &keys,
            "openbao/raft.snap",
            flipped.as_slice(),
            flipped.len() as u64,
            Vec::new()
        )
        .is_err());
        if len > CHUNK {
            let cut = &sealed[..NONCE_PREFIX + CHUNK + TAG];
            assert!(decrypt(&keys, "openbao/raft.snap", cut, cut.len() as u64, Vec::new()).is_err());
        }
    }

    #[test]
    fn encryption_round_trips_at_chunk_borders_and_refuses_tampering() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK] {
            roundtrip(len);
        }
    }
}
