//! TPM 2.0 commands, encoded here: the dozen the Azure attester (and its tests' provisioning) needs, with
//! password sessions of empty auth only.
//!
//! Why not `tss-esapi`: it links the C TSS stack (libtss2-esys, tctildr) and needs bindgen and clang to build,
//! for an enclave that sends six kinds of command to one device. These commands are short, fixed structures
//! (TPM 2.0 Library Part 3), and every response is parsed with bounds checks: the TPM is the paravisor's,
//! inside the measurement, but a parser that trusts lengths is a liability anywhere.
//!
//! ```text
//! command   tag u16 (0x8001 no sessions | 0x8002 sessions) | size u32 | code u32 | handles u32… |
//!           [authSize u32 = 9 | TPM_RS_PW u32 | nonce TPM2B (0) | attributes u8 | hmac TPM2B (0)] | parameters
//! response  tag u16 | size u32 | responseCode u32 | handles u32… | [parameterSize u32] | parameters |
//!           [auth response]
//! ```

use std::io;

/// TPM_RH_OWNER.
pub const RH_OWNER: u32 = 0x4000_0001;
/// TPM_RH_ENDORSEMENT.
pub const RH_ENDORSEMENT: u32 = 0x4000_000B;
/// TPM_RS_PW.
const RS_PW: u32 = 0x4000_0009;
const ST_NO_SESSIONS: u16 = 0x8001;
const ST_SESSIONS: u16 = 0x8002;
const ALG_RSA: u16 = 0x0001;
const ALG_SHA256: u16 = 0x000B;
const ALG_NULL: u16 = 0x0010;
const ALG_RSASSA: u16 = 0x0014;

const CC_EVICT_CONTROL: u32 = 0x120;
const CC_NV_DEFINE_SPACE: u32 = 0x12A;
const CC_CREATE_PRIMARY: u32 = 0x131;
const CC_NV_WRITE: u32 = 0x137;
const CC_NV_READ: u32 = 0x14E;
const CC_QUOTE: u32 = 0x158;
const CC_FLUSH_CONTEXT: u32 = 0x165;
const CC_NV_READ_PUBLIC: u32 = 0x169;
const CC_READ_PUBLIC: u32 = 0x173;
const CC_PCR_READ: u32 = 0x17E;
const CC_PCR_EXTEND: u32 = 0x182;

/// TPMA_NV: OWNERWRITE | AUTHWRITE | OWNERREAD | AUTHREAD (how Azure's guest tools define 0x01400002).
pub const NV_OWNER_AUTH_RW: u32 = 0x2 | 0x4 | 0x2_0000 | 0x4_0000;
/// The Azure AK's attributes: fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth, noDA, restricted,
/// sign (0x00050472).
pub const AK_ATTRIBUTES: u32 = 0x0005_0472;
/// Bytes moved by one NV_Read or NV_Write (below every TPM's TPM_PT_NV_BUFFER_MAX; libtpms: 1024).
pub const NV_CHUNK: usize = 512;
/// Largest response accepted.
pub const MAX_RESPONSE: usize = 8192;

/// Why a TPM command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    /// The transport failed.
    #[error("TPM transport: {0}")]
    Io(#[from] io::Error),
    /// The TPM answered with an error code.
    #[error("TPM2_{command} failed with response code {code:#x}")]
    Code {
        /// The command.
        command: &'static str,
        /// TPM_RC.
        code: u32,
    },
    /// The response is malformed.
    #[error("TPM2_{command}: malformed response: {detail}")]
    Malformed {
        /// The command.
        command: &'static str,
        /// What is wrong.
        detail: String,
    },
}

/// Moves one command to the TPM and its response back.
pub trait TpmTransport: Send {
    /// Sends `command`, returns the complete response.
    fn transmit(&mut self, command: &[u8]) -> io::Result<Vec<u8>>;
}

/// `/dev/tpmrm0` (the kernel's resource manager): one write, one read.
#[derive(Debug)]
pub struct DeviceTransport {
    file: std::fs::File,
}

impl DeviceTransport {
    /// Opens the device.
    pub fn open(path: &std::path::Path) -> io::Result<Self> {
        Ok(DeviceTransport {
            file: std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)?,
        })
    }
}

impl TpmTransport for DeviceTransport {
    fn transmit(&mut self, command: &[u8]) -> io::Result<Vec<u8>> {
        use std::io::{Read, Write};
        self.file.write_all(command)?;
        let mut buf = vec![0u8; MAX_RESPONSE];
        let n = self.file.read(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }
}

/// swtpm's raw TCP server (`swtpm socket --server type=tcp`): the command, then a response whose header
/// says its size. INSECURE: a TPM reached over the network is not the paravisor's; tests only.
#[cfg(feature = "insecure-simulator")]
#[derive(Debug)]
pub struct SwtpmTransport {
    address: String,
    stream: Option<std::net::TcpStream>,
}

#[cfg(feature = "insecure-simulator")]
impl SwtpmTransport {
    /// A transport to swtpm at `address` (`HOST:PORT`); connects at the first command.
    pub fn new(address: &str) -> Self {
        SwtpmTransport {
            address: address.to_owned(),
            stream: None,
        }
    }

    fn exchange(stream: &mut std::net::TcpStream, command: &[u8]) -> io::Result<Vec<u8>> {
        use std::io::{Read, Write};
        stream.write_all(command)?;
        let mut head = [0u8; 10];
        stream.read_exact(&mut head)?;
        let size = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
        if !(10..=MAX_RESPONSE).contains(&size) {
            return Err(io::Error::other(format!("response size {size}")));
        }
        let mut out = head.to_vec();
        out.resize(size, 0);
        stream.read_exact(&mut out[10..])?;
        Ok(out)
    }
}

#[cfg(feature = "insecure-simulator")]
impl TpmTransport for SwtpmTransport {
    fn transmit(&mut self, command: &[u8]) -> io::Result<Vec<u8>> {
        if self.stream.is_none() {
            let s = std::net::TcpStream::connect(&self.address)?;
            s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
            self.stream = Some(s);
        }
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| io::Error::other("no stream"))?;
        let out = Self::exchange(stream, command);
        if out.is_err() {
            self.stream = None;
        }
        out
    }
}

/// A response's parameters, read with bounds checks.
struct Params<'a> {
    command: &'static str,
    b: &'a [u8],
    at: usize,
}

impl<'a> Params<'a> {
    fn bad(&self, detail: impl Into<String>) -> TpmError {
        TpmError::Malformed {
            command: self.command,
            detail: detail.into(),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], TpmError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| self.bad(format!("ends at byte {} of {}", self.at, self.b.len())))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, TpmError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, TpmError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, TpmError> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn tpm2b(&mut self) -> Result<&'a [u8], TpmError> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
}

fn tpm2b(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// TPML_PCR_SELECTION of the SHA-256 bank for `pcrs`.
fn sha256_selection(pcrs: &[u8]) -> Vec<u8> {
    let mut bitmap = [0u8; 3];
    for &p in pcrs {
        bitmap[usize::from(p / 8)] |= 1 << (p % 8);
    }
    let mut out = 1u32.to_be_bytes().to_vec();
    out.extend_from_slice(&ALG_SHA256.to_be_bytes());
    out.push(3);
    out.extend_from_slice(&bitmap);
    out
}

/// An RSA public key read from the TPM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RsaPublic {
    /// Modulus, big-endian.
    pub n: Vec<u8>,
    /// Exponent (65537 when the TPM says 0).
    pub e: u32,
    /// objectAttributes.
    pub attributes: u32,
}

/// A quote: TPMS_ATTEST and TPMT_SIGNATURE as the TPM returned them.
#[derive(Clone, Debug)]
pub struct Quote {
    /// TPMS_ATTEST.
    pub attest: Vec<u8>,
    /// TPMT_SIGNATURE.
    pub signature: Vec<u8>,
}

/// A TPM over a transport.
pub struct Tpm<T: TpmTransport> {
    transport: T,
}

impl<T: TpmTransport> std::fmt::Debug for Tpm<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm").finish_non_exhaustive()
    }
}

impl<T: TpmTransport> Tpm<T> {
    /// A TPM reached through `transport`.
    pub fn new(transport: T) -> Self {
        Tpm { transport }
    }

    /// Runs a command: `handles` in the handle area, a password session (empty auth) when `auth`, then
    /// `params`. Returns the response handles (`response_handles` of them) and the parameter bytes.
    fn run(
        &mut self,
        command: &'static str,
        code: u32,
        handles: &[u32],
        auth: bool,
        params: &[u8],
        response_handles: usize,
    ) -> Result<(Vec<u32>, Vec<u8>), TpmError> {
        let mut body = Vec::with_capacity(64 + params.len());
        body.extend_from_slice(&code.to_be_bytes());
        for h in handles {
            body.extend_from_slice(&h.to_be_bytes());
        }
        if auth {
            body.extend_from_slice(&9u32.to_be_bytes());
            body.extend_from_slice(&RS_PW.to_be_bytes());
            body.extend_from_slice(&[0, 0, 0, 0, 0]);
        }
        body.extend_from_slice(params);
        let mut cmd = Vec::with_capacity(6 + body.len());
        cmd.extend_from_slice(&(if auth { ST_SESSIONS } else { ST_NO_SESSIONS }).to_be_bytes());
        cmd.extend_from_slice(&((6 + body.len()) as u32).to_be_bytes());
        cmd.extend_from_slice(&body);
        let resp = self.transport.transmit(&cmd)?;
        let mut r = Params {
            command,
            b: &resp,
            at: 0,
        };
        let tag = r.u16()?;
        let size = r.u32()? as usize;
        let rc = r.u32()?;
        if size != resp.len() {
            return Err(r.bad(format!("header says {size} bytes, {} arrived", resp.len())));
        }
        if rc != 0 {
            return Err(TpmError::Code { command, code: rc });
        }
        let mut out_handles = Vec::with_capacity(response_handles);
        for _ in 0..response_handles {
            out_handles.push(r.u32()?);
        }
        let params = if tag == ST_SESSIONS {
            let n = r.u32()? as usize;
            r.take(n)?.to_vec()
        } else {
            r.take(resp.len() - r.at)?.to_vec()
        };
        Ok((out_handles, params))
    }

    /// NV_ReadPublic: the index's data size and attributes, `None` if it is not defined.
    pub fn nv_read_public(&mut self, index: u32) -> Result<Option<(u16, u32)>, TpmError> {
        match self.run("NV_ReadPublic", CC_NV_READ_PUBLIC, &[index], false, &[], 0) {
            // TPM_RC_HANDLE for the first handle: not defined.
            Err(TpmError::Code { code, .. }) if code & 0xFFF == 0x18B => Ok(None),
            Err(e) => Err(e),
            Ok((_, p)) => {
                let mut r = Params {
                    command: "NV_ReadPublic",
                    b: &p,
                    at: 0,
                };
                let public = r.tpm2b()?;
                let mut q = Params {
                    command: "NV_ReadPublic",
                    b: public,
                    at: 0,
                };
                let found = q.u32()?;
                if found != index {
                    return Err(q.bad(format!("index {found:#x}, asked {index:#x}")));
                }
                q.u16()?; // nameAlg
                let attributes = q.u32()?;
                q.tpm2b()?; // authPolicy
                Ok(Some((q.u16()?, attributes)))
            }
        }
    }

    /// NV_DefineSpace under the owner, empty auth, SHA-256 name.
    pub fn nv_define(&mut self, index: u32, size: u16, attributes: u32) -> Result<(), TpmError> {
        let mut public = Vec::new();
        public.extend_from_slice(&index.to_be_bytes());
        public.extend_from_slice(&ALG_SHA256.to_be_bytes());
        public.extend_from_slice(&attributes.to_be_bytes());
        tpm2b(&mut public, &[]);
        public.extend_from_slice(&size.to_be_bytes());
        let mut params = Vec::new();
        tpm2b(&mut params, &[]); // auth
        tpm2b(&mut params, &public);
        self.run(
            "NV_DefineSpace",
            CC_NV_DEFINE_SPACE,
            &[RH_OWNER],
            true,
            &params,
            0,
        )
        .map(drop)
    }

    /// NV_Write of `data` at offset 0, in chunks, with owner authorization.
    pub fn nv_write(&mut self, index: u32, data: &[u8]) -> Result<(), TpmError> {
        for (i, chunk) in data.chunks(NV_CHUNK).enumerate() {
            let mut params = Vec::new();
            tpm2b(&mut params, chunk);
            params.extend_from_slice(&((i * NV_CHUNK) as u16).to_be_bytes());
            self.run(
                "NV_Write",
                CC_NV_WRITE,
                &[RH_OWNER, index],
                true,
                &params,
                0,
            )?;
        }
        Ok(())
    }

    /// NV_Read of `len` bytes from offset 0, in chunks, with owner authorization. The first chunk is read at
    /// offset 0 (which is what makes Azure's paravisor refresh its report).
    pub fn nv_read(&mut self, index: u32, len: usize) -> Result<Vec<u8>, TpmError> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let n = (len - out.len()).min(NV_CHUNK);
            let mut params = (n as u16).to_be_bytes().to_vec();
            params.extend_from_slice(&(out.len() as u16).to_be_bytes());
            let (_, p) = self.run("NV_Read", CC_NV_READ, &[RH_OWNER, index], true, &params, 0)?;
            let mut r = Params {
                command: "NV_Read",
                b: &p,
                at: 0,
            };
            let data = r.tpm2b()?;
            if data.len() != n {
                return Err(r.bad(format!("{} bytes, asked {n}", data.len())));
            }
            out.extend_from_slice(data);
        }
        Ok(out)
    }

    /// ReadPublic of an RSA key.
    pub fn read_public_rsa(&mut self, handle: u32) -> Result<RsaPublic, TpmError> {
        let (_, p) = self.run("ReadPublic", CC_READ_PUBLIC, &[handle], false, &[], 0)?;
        let mut r = Params {
            command: "ReadPublic",
            b: &p,
            at: 0,
        };
        let public = r.tpm2b()?;
        let mut q = Params {
            command: "ReadPublic",
            b: public,
            at: 0,
        };
        let kind = q.u16()?;
        if kind != ALG_RSA {
            return Err(q.bad(format!("key type {kind:#06x}, expected RSA")));
        }
        q.u16()?; // nameAlg
        let attributes = q.u32()?;
        q.tpm2b()?; // authPolicy
        if q.u16()? != ALG_NULL {
            q.take(4)?; // symmetric keyBits, mode
        }
        if q.u16()? != ALG_NULL {
            q.u16()?; // scheme hash
        }
        q.u16()?; // keyBits
        let e = match q.u32()? {
            0 => 65537,
            e => e,
        };
        let n = q.tpm2b()?.to_vec();
        Ok(RsaPublic { n, e, attributes })
    }

    /// Quote of the SHA-256 bank's `pcrs` with the key at `handle` (its own scheme), over `qualifying`.
    pub fn quote(
        &mut self,
        handle: u32,
        qualifying: &[u8],
        pcrs: &[u8],
    ) -> Result<Quote, TpmError> {
        let mut params = Vec::new();
        tpm2b(&mut params, qualifying);
        params.extend_from_slice(&ALG_NULL.to_be_bytes());
        params.extend_from_slice(&sha256_selection(pcrs));
        let (_, p) = self.run("Quote", CC_QUOTE, &[handle], true, &params, 0)?;
        let mut r = Params {
            command: "Quote",
            b: &p,
            at: 0,
        };
        let attest = r.tpm2b()?.to_vec();
        let signature = r.take(p.len() - r.at)?.to_vec();
        Ok(Quote { attest, signature })
    }

    /// PCR_Read of the SHA-256 bank's `pcrs` (several commands: one returns at most eight values).
    pub fn pcr_read(&mut self, pcrs: &[u8]) -> Result<Vec<[u8; 32]>, TpmError> {
        let mut values: Vec<Option<[u8; 32]>> = vec![None; 24];
        let mut wanted: Vec<u8> = pcrs.to_vec();
        while !wanted.is_empty() {
            let (_, p) = self.run(
                "PCR_Read",
                CC_PCR_READ,
                &[],
                false,
                &sha256_selection(&wanted),
                0,
            )?;
            let mut r = Params {
                command: "PCR_Read",
                b: &p,
                at: 0,
            };
            r.u32()?; // updateCounter
            let banks = r.u32()?;
            let mut read = Vec::new();
            for _ in 0..banks {
                let hash = r.u16()?;
                let size = usize::from(r.u8()?);
                let bitmap = r.take(size)?;
                if hash == ALG_SHA256 {
                    read.extend((0..size * 8).filter(|i| bitmap[i / 8] & (1 << (i % 8)) != 0));
                }
            }
            let count = r.u32()? as usize;
            if count != read.len() || count == 0 {
                return Err(r.bad(format!("{count} digests for {} PCRs", read.len())));
            }
            for i in read {
                let d = r.tpm2b()?;
                let slot = values.get_mut(i).ok_or_else(|| r.bad(format!("PCR {i}")))?;
                *slot = Some(
                    d.try_into()
                        .map_err(|_| r.bad("a digest is not 32 bytes"))?,
                );
                wanted.retain(|w| usize::from(*w) != i);
            }
        }
        pcrs.iter()
            .map(|&i| {
                values[usize::from(i)].ok_or_else(|| TpmError::Malformed {
                    command: "PCR_Read",
                    detail: format!("PCR {i} not read"),
                })
            })
            .collect()
    }

    /// PCR_Extend of the SHA-256 bank (provisioning and tests: what a boot chain does).
    pub fn pcr_extend(&mut self, pcr: u8, digest: &[u8; 32]) -> Result<(), TpmError> {
        let mut params = 1u32.to_be_bytes().to_vec();
        params.extend_from_slice(&ALG_SHA256.to_be_bytes());
        params.extend_from_slice(digest);
        self.run(
            "PCR_Extend",
            CC_PCR_EXTEND,
            &[u32::from(pcr)],
            true,
            &params,
            0,
        )
        .map(drop)
    }

    /// CreatePrimary of an Azure-shaped AK (RSA-2048, RSASSA-SHA256, restricted signing) under the
    /// endorsement hierarchy; returns its transient handle (provisioning and tests).
    pub fn create_primary_ak(&mut self) -> Result<u32, TpmError> {
        let mut public = Vec::new();
        public.extend_from_slice(&ALG_RSA.to_be_bytes());
        public.extend_from_slice(&ALG_SHA256.to_be_bytes());
        public.extend_from_slice(&AK_ATTRIBUTES.to_be_bytes());
        tpm2b(&mut public, &[]); // authPolicy
        public.extend_from_slice(&ALG_NULL.to_be_bytes()); // symmetric
        public.extend_from_slice(&ALG_RSASSA.to_be_bytes());
        public.extend_from_slice(&ALG_SHA256.to_be_bytes());
        public.extend_from_slice(&2048u16.to_be_bytes());
        public.extend_from_slice(&0u32.to_be_bytes()); // exponent: 65537
        tpm2b(&mut public, &[]); // unique
        let mut params = Vec::new();
        tpm2b(&mut params, &[0, 0, 0, 0]); // TPM2B_SENSITIVE_CREATE: empty userAuth and data
        tpm2b(&mut params, &public);
        tpm2b(&mut params, &[]); // outsideInfo
        params.extend_from_slice(&0u32.to_be_bytes()); // creationPCR: none
        let (handles, _) = self.run(
            "CreatePrimary",
            CC_CREATE_PRIMARY,
            &[RH_ENDORSEMENT],
            true,
            &params,
            1,
        )?;
        Ok(handles[0])
    }

    /// EvictControl: makes `object` persistent at `persistent` (owner authorization).
    pub fn evict_control(&mut self, object: u32, persistent: u32) -> Result<(), TpmError> {
        self.run(
            "EvictControl",
            CC_EVICT_CONTROL,
            &[RH_OWNER, object],
            true,
            &persistent.to_be_bytes(),
            0,
        )
        .map(drop)
    }

    /// FlushContext of a transient object.
    pub fn flush(&mut self, handle: u32) -> Result<(), TpmError> {
        self.run(
            "FlushContext",
            CC_FLUSH_CONTEXT,
            &[],
            false,
            &handle.to_be_bytes(),
            0,
        )
        .map(drop)
    }
}
