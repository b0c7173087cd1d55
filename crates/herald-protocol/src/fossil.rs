//! Fossil deltas: the patch format the Centrifuge SDKs apply for subscriptions with
//! `delta: "fossil"`, so that a channel publishing full state sends only what changed.
//!
//! A patch is `<target size>\n`, then commands — `N@O,` (copy `N` bytes of the source
//! from offset `O`), `N:` followed by `N` literal bytes (insert) — and a final `N;`
//! carrying a checksum of the target. Numbers are written in base 64 with the digits
//! `0-9 A-Z _ a-z ~`, most significant first.
//!
//! [`create`] keeps its copies on UTF-8 character boundaries when the target is UTF-8
//! text, so the patch of one JSON text against another is UTF-8 too: the JSON protocol
//! carries patches inside JSON strings, which cannot hold a split character.

/// A delta compression a subscription can ask for (`SubscribeRequest.delta`) and a
/// namespace can allow (`allowed_delta_types`). Fossil is the only one the SDKs know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum DeltaType {
    /// Fossil deltas ([`create`], [`apply`]).
    Fossil,
}

/// A delta type name Herald does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown delta type {0:?} (the only one is \"fossil\")")]
pub struct UnknownDeltaType(pub String);

impl TryFrom<String> for DeltaType {
    type Error = UnknownDeltaType;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::parse(&name).ok_or(UnknownDeltaType(name))
    }
}

impl DeltaType {
    /// The type named on the wire, or `None` for a name Herald does not know.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "fossil" => Some(Self::Fossil),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fossil => "fossil",
        }
    }
}

/// Why a patch could not be applied. Patches come from the network: every malformed
/// one is an error, never a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// The patch does not start with the target size and a newline.
    #[error("the patch does not start with the target size and a newline")]
    BadHeader,
    /// A number is missing where a command needs one, or overflows.
    #[error("bad number at byte {at} of the patch")]
    BadNumber {
        /// Byte position in the patch.
        at: usize,
    },
    /// A command character is not `@`, `:` or `;`, or a copy lacks its `,`.
    #[error("unknown command at byte {at} of the patch")]
    BadCommand {
        /// Byte position in the patch.
        at: usize,
    },
    /// A copy reads past the end of the source.
    #[error("a copy reads past the end of the source")]
    CopyOutOfRange,
    /// An insert announces more bytes than the patch holds.
    #[error("an insert runs past the end of the patch")]
    InsertOutOfRange,
    /// The commands produce more bytes than the header announced.
    #[error("the output grows past the announced size")]
    TooLong,
    /// The output is shorter than the header announced.
    #[error("the output is shorter than the announced size")]
    TooShort,
    /// The output's checksum differs from the patch's: wrong source, or a damaged patch.
    #[error("checksum mismatch (patched against the wrong source?)")]
    Checksum,
    /// The patch ends without its checksum command, or has bytes after it.
    #[error("the patch does not end with exactly one checksum")]
    Unterminated,
}

/// The base-64 digits of patch numbers, by value.
const DIGITS: &[u8; 64] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";

/// The value of one patch digit.
fn digit_value(b: u8) -> Option<u64> {
    let v = match b {
        b'0'..=b'9' => b - b'0',
        b'A'..=b'Z' => b - b'A' + 10,
        b'_' => 36,
        b'a'..=b'z' => b - b'a' + 37,
        b'~' => 63,
        _ => return None,
    };
    Some(u64::from(v))
}

fn put_number(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 11];
    let mut i = buf.len();
    loop {
        i -= 1;
        // `n & 63` is below 64, so the index is in range.
        buf[i] = DIGITS[(n & 63) as usize];
        n >>= 6;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn number_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 64 {
        n >>= 6;
        len += 1;
    }
    len
}

/// The checksum the last command carries: the wrapping sum of the data read as
/// big-endian 32-bit words, the last one padded with zero bytes.
pub fn checksum(data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(4);
    let mut sum = 0u32;
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 4];
        last[..rest.len()].copy_from_slice(rest);
        sum = sum.wrapping_add(u32::from_be_bytes(last));
    }
    sum
}

/// Bytes hashed together when looking for matches: the source is indexed in blocks of
/// this size, so shorter common runs are never copied (they would barely pay for their
/// copy command anyway).
const BLOCK: usize = 16;

/// Candidates examined per target position; bounds the work on repetitive sources.
const MAX_CANDIDATES: usize = 32;

/// The multiplier of the rolling hash.
const HASH_MUL: u32 = 0x0100_0193;

fn block_hash(block: &[u8]) -> u32 {
    block.iter().fold(0u32, |h, &b| {
        h.wrapping_mul(HASH_MUL).wrapping_add(u32::from(b))
    })
}

/// The source's blocks, found by hash: `heads[hash & mask]` is the last block with that
/// hash bucket, `chain[block]` the one before it.
struct Index {
    heads: Vec<u32>,
    chain: Vec<u32>,
    mask: usize,
}

const NONE: u32 = u32::MAX;

impl Index {
    fn new(source: &[u8]) -> Self {
        let blocks = source.len() / BLOCK;
        let size = (blocks * 2).next_power_of_two().max(16);
        let mut index = Self {
            heads: vec![NONE; size],
            chain: vec![NONE; blocks],
            mask: size - 1,
        };
        for (i, block) in source.chunks_exact(BLOCK).enumerate() {
            let bucket = block_hash(block) as usize & index.mask;
            index.chain[i] = index.heads[bucket];
            // Block numbers fit in u32: `create` only indexes sources below 4 GiB.
            index.heads[bucket] = i as u32;
        }
        index
    }

    fn candidates(&self, hash: u32) -> impl Iterator<Item = usize> + '_ {
        let mut next = self.heads[hash as usize & self.mask];
        std::iter::from_fn(move || {
            if next == NONE {
                return None;
            }
            let block = next as usize;
            next = self.chain[block];
            Some(block * BLOCK)
        })
        .take(MAX_CANDIDATES)
    }
}

/// A run of the target found in the source.
#[derive(Clone, Copy)]
struct Match {
    target: usize,
    source: usize,
    len: usize,
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

/// Shrinks a match so that it starts and ends on character boundaries of the target.
fn align_to_chars(target: &[u8], mut m: Match) -> Match {
    while m.len > 0 && is_continuation(target[m.target]) {
        m.target += 1;
        m.source += 1;
        m.len -= 1;
    }
    while m.len > 0
        && target
            .get(m.target + m.len)
            .is_some_and(|&b| is_continuation(b))
    {
        m.len -= 1;
    }
    m
}

/// What a copy command costs in patch bytes, plus the insert header it may split off.
fn copy_cost(m: &Match) -> usize {
    number_len(m.len as u64) + number_len(m.source as u64) + 2 + 3
}

fn put_insert(out: &mut Vec<u8>, literal: &[u8]) {
    if !literal.is_empty() {
        put_number(out, literal.len() as u64);
        out.push(b':');
        out.extend_from_slice(literal);
    }
}

/// The patch that turns `source` into `target`: `apply(source, &create(source, target))`
/// returns `target`. When `target` is UTF-8, so is the patch.
///
/// The cost is linear in the sizes for ordinary inputs (a bounded number of candidate
/// matches per target byte).
pub fn create(source: &[u8], target: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(target.len() / 8 + 32);
    put_number(&mut out, target.len() as u64);
    out.push(b'\n');
    let text = std::str::from_utf8(target).is_ok();
    let mut literal_from = 0;
    if source.len() >= BLOCK && source.len() < u32::MAX as usize && target.len() >= BLOCK {
        let index = Index::new(source);
        let mut pos = 0;
        let mut hash = block_hash(&target[..BLOCK]);
        // The hash of a window drops its first byte's contribution, `HASH_MUL^(BLOCK-1)`.
        let drop_mul = (1..BLOCK).fold(1u32, |m, _| m.wrapping_mul(HASH_MUL));
        loop {
            let best = best_match(source, target, &index, hash, pos, literal_from);
            let best = best.map(|m| if text { align_to_chars(target, m) } else { m });
            match best {
                Some(m) if m.len > copy_cost(&m) => {
                    put_insert(&mut out, &target[literal_from..m.target]);
                    put_number(&mut out, m.len as u64);
                    out.push(b'@');
                    put_number(&mut out, m.source as u64);
                    out.push(b',');
                    pos = m.target + m.len;
                    literal_from = pos;
                    if pos + BLOCK > target.len() {
                        break;
                    }
                    hash = block_hash(&target[pos..pos + BLOCK]);
                }
                _ => {
                    if pos + BLOCK >= target.len() {
                        break;
                    }
                    let gone = u32::from(target[pos]).wrapping_mul(drop_mul);
                    hash = hash
                        .wrapping_sub(gone)
                        .wrapping_mul(HASH_MUL)
                        .wrapping_add(u32::from(target[pos + BLOCK]));
                    pos += 1;
                }
            }
        }
    }
    put_insert(&mut out, &target[literal_from..]);
    put_number(&mut out, u64::from(checksum(target)));
    out.push(b';');
    out
}

/// The longest source run around the window at `pos`, extended backwards no further
/// than the bytes not yet emitted (`literal_from`).
fn best_match(
    source: &[u8],
    target: &[u8],
    index: &Index,
    hash: u32,
    pos: usize,
    literal_from: usize,
) -> Option<Match> {
    let mut best: Option<Match> = None;
    for start in index.candidates(hash) {
        let ahead = common_prefix(&source[start..], &target[pos..]);
        if ahead < BLOCK {
            continue;
        }
        let behind = common_suffix(&source[..start], &target[literal_from..pos]);
        let len = ahead + behind;
        if best.is_none_or(|b| len > b.len) {
            best = Some(Match {
                target: pos - behind,
                source: start - behind,
                len,
            });
        }
    }
    best
}

/// Reads patch commands; every step is checked, nothing can panic.
struct Reader<'a> {
    patch: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn number(&mut self) -> Result<u64, DeltaError> {
        let at = self.pos;
        let mut n: u64 = 0;
        while let Some(d) = self.patch.get(self.pos).and_then(|&b| digit_value(b)) {
            n = n
                .checked_mul(64)
                .and_then(|n| n.checked_add(d))
                .ok_or(DeltaError::BadNumber { at })?;
            self.pos += 1;
        }
        if self.pos == at {
            return Err(DeltaError::BadNumber { at });
        }
        Ok(n)
    }

    fn byte(&mut self) -> Option<u8> {
        let b = self.patch.get(self.pos).copied();
        self.pos += usize::from(b.is_some());
        b
    }

    fn usize(&mut self) -> Result<usize, DeltaError> {
        let at = self.pos;
        let n = self.number()?;
        usize::try_from(n).map_err(|_| DeltaError::BadNumber { at })
    }
}

/// Applies a patch made by [`create`] (or any fossil delta encoder) to `source`.
pub fn apply(source: &[u8], patch: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let mut r = Reader { patch, pos: 0 };
    let size = r.usize().map_err(|_| DeltaError::BadHeader)?;
    if r.byte() != Some(b'\n') {
        return Err(DeltaError::BadHeader);
    }
    // The announced size is only a claim: reserve no more than the inputs could
    // plausibly produce without repeated copies.
    let mut out = Vec::with_capacity(size.min(source.len() + patch.len()));
    loop {
        let at = r.pos;
        if at == patch.len() {
            return Err(DeltaError::Unterminated);
        }
        let n = r.number()?;
        match r.byte() {
            Some(b'@') => {
                let from = r.usize()?;
                let comma = r.pos;
                if r.byte() != Some(b',') {
                    return Err(DeltaError::BadCommand { at: comma });
                }
                let len = usize::try_from(n).map_err(|_| DeltaError::CopyOutOfRange)?;
                let run = from
                    .checked_add(len)
                    .and_then(|end| source.get(from..end))
                    .ok_or(DeltaError::CopyOutOfRange)?;
                if out.len() + run.len() > size {
                    return Err(DeltaError::TooLong);
                }
                out.extend_from_slice(run);
            }
            Some(b':') => {
                let len = usize::try_from(n).map_err(|_| DeltaError::InsertOutOfRange)?;
                let run = r
                    .pos
                    .checked_add(len)
                    .and_then(|end| patch.get(r.pos..end))
                    .ok_or(DeltaError::InsertOutOfRange)?;
                if out.len() + run.len() > size {
                    return Err(DeltaError::TooLong);
                }
                out.extend_from_slice(run);
                r.pos += len;
            }
            Some(b';') => {
                if r.pos != patch.len() {
                    return Err(DeltaError::Unterminated);
                }
                if out.len() != size {
                    return Err(DeltaError::TooShort);
                }
                if u64::from(checksum(&out)) != n {
                    return Err(DeltaError::Checksum);
                }
                return Ok(out);
            }
            Some(_) => return Err(DeltaError::BadCommand { at: r.pos - 1 }),
            None => return Err(DeltaError::Unterminated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(text: &str) -> Result<u64, DeltaError> {
        Reader {
            patch: text.as_bytes(),
            pos: 0,
        }
        .number()
    }

    #[test]
    fn numbers_use_the_64_digit_alphabet() {
        for (n, text) in [
            (0, "0"),
            (9, "9"),
            (10, "A"),
            (36, "_"),
            (37, "a"),
            (63, "~"),
            (64, "10"),
            (4095, "~~"),
        ] {
            let mut out = Vec::new();
            put_number(&mut out, n);
            assert_eq!(out, text.as_bytes(), "{n}");
            assert_eq!(number(text), Ok(n));
            assert_eq!(number_len(n), text.len());
        }
        let mut out = Vec::new();
        put_number(&mut out, u64::MAX);
        assert_eq!(
            number(std::str::from_utf8(&out).expect("ascii")),
            Ok(u64::MAX)
        );
        assert!(number("~~~~~~~~~~~~").is_err(), "overflow is an error");
        assert!(number("").is_err());
    }

    #[test]
    fn checksum_sums_big_endian_words_padding_the_last() {
        assert_eq!(checksum(b""), 0);
        assert_eq!(checksum(&[1, 2, 3, 4]), 0x0102_0304);
        assert_eq!(checksum(&[1, 2, 3, 4, 5]), 0x0102_0304 + 0x0500_0000);
        assert_eq!(checksum(&[0xff; 8]), 0xffff_fffe);
    }

    #[test]
    fn a_small_patch_reads_as_expected() {
        let source = b"the quick brown fox jumps over the lazy dog";
        let target = b"the quick brown fox jumps over the lazy cat";
        let patch = create(source, target);
        let text = std::str::from_utf8(&patch).expect("ascii");
        assert!(text.starts_with("g\n"), "{text}");
        assert!(text.contains("@0,"), "{text}");
        assert!(text.ends_with(';'), "{text}");
        assert_eq!(apply(source, &patch).as_deref(), Ok(&target[..]));
    }

    #[test]
    fn malformed_patches_are_errors() {
        let src = b"0123456789";
        for (patch, err) in [
            (&b""[..], DeltaError::BadHeader),
            (b"3", DeltaError::BadHeader),
            (b"3\n", DeltaError::Unterminated),
            (b"3\n3@8,", DeltaError::CopyOutOfRange),
            (b"3\n4@0,", DeltaError::TooLong),
            (b"3\n2@0", DeltaError::BadCommand { at: 5 }),
            (b"3\n9:ab", DeltaError::InsertOutOfRange),
            (b"3\n2:ab0;", DeltaError::TooShort),
            (b"2\n2:ab0;", DeltaError::Checksum),
            (b"2\n2:ab0;x", DeltaError::Unterminated),
            (b"2\n2!ab", DeltaError::BadCommand { at: 3 }),
            (b"2\n:ab", DeltaError::BadNumber { at: 2 }),
        ] {
            assert_eq!(
                apply(src, patch),
                Err(err),
                "{:?}",
                String::from_utf8_lossy(patch)
            );
        }
    }
}
