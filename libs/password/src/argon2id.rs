//! argon2id with the configured parameters, hashing into memory the caller keeps.
//!
//! Allocating argon2's memory (19 MiB at the OWASP defaults) for every hash leaves glibc
//! holding freed blocks per thread; reusing one buffer per worker keeps the resident set at
//! about one buffer per hashing thread and is faster.

use argon2::password_hash::phc::{Output, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use serde::Deserialize;
use subtle::ConstantTimeEq;

/// argon2id parameters for the hashes the store writes. Defaults are OWASP's
/// (m = 19456 KiB, t = 2, p = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Argon2Config {
    /// Memory cost in KiB.
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for Argon2Config {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// The largest argon2 memory cost we agree to verify (1 GiB): a stored hash is data, and a
/// corrupted or hostile one must not make us allocate without bound.
pub(crate) const MAX_VERIFY_MEMORY_KIB: u32 = 1 << 20;

const OUTPUT_LEN: usize = 32;

impl Argon2Config {
    pub fn params(&self) -> Result<Params, argon2::Error> {
        Params::new(
            self.memory_kib,
            self.iterations,
            self.parallelism,
            Some(OUTPUT_LEN),
        )
    }

    /// Whether a stored argon2 hash is weaker than (or different from) what we would write now.
    pub(crate) fn is_weaker(
        &self,
        algorithm: Algorithm,
        version: Version,
        params: &Params,
    ) -> bool {
        algorithm != Algorithm::Argon2id
            || version != Version::V0x13
            || params.m_cost() < self.memory_kib
            || params.t_cost() < self.iterations
            || params.p_cost() < self.parallelism
    }
}

/// Per-worker reusable argon2 memory.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    blocks: Vec<Block>,
}

impl Scratch {
    /// Memory for `params`, reusing the worker's buffer. Buffers larger than the configured
    /// cost are not kept, so one unusual legacy hash does not pin its memory for good.
    fn blocks(&mut self, params: &Params, keep_up_to: usize) -> ScratchBlocks<'_> {
        let needed = params.block_count();
        if needed <= keep_up_to {
            if self.blocks.len() < needed {
                self.blocks.resize(needed, Block::new());
            }
            ScratchBlocks::Borrowed(&mut self.blocks[..needed])
        } else {
            ScratchBlocks::Owned(vec![Block::new(); needed])
        }
    }
}

enum ScratchBlocks<'a> {
    Borrowed(&'a mut [Block]),
    Owned(Vec<Block>),
}

impl AsMut<[Block]> for ScratchBlocks<'_> {
    fn as_mut(&mut self) -> &mut [Block] {
        match self {
            ScratchBlocks::Borrowed(b) => b,
            ScratchBlocks::Owned(v) => v,
        }
    }
}

/// Hash `password` with a fresh random salt into a PHC string.
pub(crate) fn hash(
    config: &Argon2Config,
    scratch: &mut Scratch,
    password: &[u8],
) -> Result<String, argon2::Error> {
    let params = config.params()?;
    let salt = Salt::generate();
    let mut out = [0u8; OUTPUT_LEN];
    let keep = params.block_count();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password, &salt, &mut out, scratch.blocks(&params, keep))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params)
            .try_into()
            .map_err(|_| argon2::Error::AlgorithmInvalid)?,
        salt: Some(salt),
        hash: Some(Output::new(&out).map_err(|_| argon2::Error::OutputTooShort)?),
    };
    Ok(phc.to_string())
}

/// A parsed argon2 PHC hash.
#[derive(Clone)]
pub(crate) struct Argon2Hash {
    pub algorithm: Algorithm,
    pub version: Version,
    pub params: Params,
    salt: Vec<u8>,
    expected: Vec<u8>,
}

impl Argon2Hash {
    pub(crate) fn parse(phc: &str) -> Option<Self> {
        let parsed = PasswordHash::new(phc).ok()?;
        let algorithm = Algorithm::try_from(parsed.algorithm.as_str()).ok()?;
        let version = match parsed.version {
            Some(v) => Version::try_from(v).ok()?,
            None => Version::V0x10,
        };
        let params = Params::try_from(&parsed).ok()?;
        if params.m_cost() > MAX_VERIFY_MEMORY_KIB {
            return None;
        }
        let salt = parsed.salt?.as_ref().to_vec();
        let expected = parsed.hash?.as_bytes().to_vec();
        Some(Self {
            algorithm,
            version,
            params,
            salt,
            expected,
        })
    }

    pub(crate) fn verify(&self, scratch: &mut Scratch, keep_up_to: usize, password: &[u8]) -> bool {
        let mut out = vec![0u8; self.expected.len()];
        let ok = Argon2::new(self.algorithm, self.version, self.params.clone())
            .hash_password_into_with_memory(
                password,
                &self.salt,
                &mut out,
                scratch.blocks(&self.params, keep_up_to),
            )
            .is_ok();
        ok && bool::from(out.ct_eq(&self.expected))
    }
}
