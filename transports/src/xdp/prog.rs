//! The subscriber's XDP program: redirect the feed's UDP port to the AF_XDP
//! socket, pass everything else to the kernel.
//!
//! libxdp's default program redirects every frame of the queue, ARP included
//! (FACTS pitfall 2). Building a BPF object needs clang at build time; this
//! program is small enough to write as 23 instructions instead, loaded with
//! raw `bpf(2)` calls:
//!
//! ```text
//!  0  r2 = ctx->data                    12  if r5 & 0xff3f goto PASS   ; MF or fragment offset
//!  1  r3 = ctx->data_end                13  r5 = *(u16 *)(r2 + 36)     ; UDP destination port
//!  2  r4 = r2                           14  if r5 != PORT goto PASS
//!  3  r4 += 42                          15  r2 = ctx->rx_queue_index
//!  4  if r4 > r3 goto PASS              16  r1 = XSKMAP (2 slots)
//!  5  r5 = *(u16 *)(r2 + 12)            18  r3 = XDP_PASS              ; action if no socket
//!  6  if r5 != ETH_P_IP goto PASS       19  call bpf_redirect_map
//!  7  r5 = *(u8 *)(r2 + 14)             20  exit
//!  8  if r5 != 0x45 goto PASS           21  PASS: r0 = XDP_PASS
//!  9  r5 = *(u8 *)(r2 + 23)             22  exit
//! 10  if r5 != IPPROTO_UDP goto PASS
//! 11  r5 = *(u16 *)(r2 + 20)
//! ```
//!
//! Loads are little-endian, so network-order constants are byte-swapped.
//! IPv4 options (IHL above 5) are passed to the kernel: the transport never
//! sends them. The program is attached through a BPF link, so closing the
//! link (dropping [`FeedFilter`]) detaches it: nothing is left behind if the
//! process dies.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::XdpAttach;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_SKB_MODE: u32 = 2;
const XDP_FLAGS_DRV_MODE: u32 = 4;
const XDP_PASS: i32 = 2;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const BPF_PSEUDO_MAP_FD: u8 = 1;
/// Bytes of verifier log kept when loading fails (enough for this program's
/// whole trace at log level 1).
const VERIFIER_LOG_LEN: usize = 64 * 1024;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Insn {
    code: u8,
    /// dst_reg in the low nibble, src_reg in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | (dst & 0x0f), off, imm }
}

/// `ldx` word / half / byte, `mov`, `add`, jumps, `call`, `exit`, `ld_imm64`.
const LDXW: u8 = 0x61;
const LDXH: u8 = 0x69;
const LDXB: u8 = 0x71;
const MOV64_X: u8 = 0xbf;
const MOV64_K: u8 = 0xb7;
const ADD64_K: u8 = 0x07;
const JGT_X: u8 = 0x2d;
const JNE_K: u8 = 0x55;
const JSET_K: u8 = 0x45;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const LD_DW_IMM: u8 = 0x18;

/// The program for feed port `port` and XSKMAP `map_fd` (see the module doc).
fn program(port: u16, map_fd: RawFd) -> [Insn; 23] {
    const PASS: i16 = 21;
    let to_pass = |pc: i16| PASS - (pc + 1);
    [
        insn(LDXW, 2, 1, 0, 0),                                   // 0 r2 = data
        insn(LDXW, 3, 1, 4, 0),                                   // 1 r3 = data_end
        insn(MOV64_X, 4, 2, 0, 0),                                // 2
        insn(ADD64_K, 4, 0, 0, 42),                               // 3 eth + ipv4 + udp
        insn(JGT_X, 4, 3, to_pass(4), 0),                         // 4
        insn(LDXH, 5, 2, 12, 0),                                  // 5 ethertype
        insn(JNE_K, 5, 0, to_pass(6), 0x0008),                    // 6 htons(0x0800)
        insn(LDXB, 5, 2, 14, 0),                                  // 7 version + IHL
        insn(JNE_K, 5, 0, to_pass(8), 0x45),                      // 8
        insn(LDXB, 5, 2, 23, 0),                                  // 9 protocol
        insn(JNE_K, 5, 0, to_pass(10), 17),                       // 10 UDP
        insn(LDXH, 5, 2, 20, 0),                                  // 11 flags + offset
        insn(JSET_K, 5, 0, to_pass(12), 0xff3f),                  // 12 MF | offset
        insn(LDXH, 5, 2, 36, 0),                                  // 13 dst port
        insn(JNE_K, 5, 0, to_pass(14), port.swap_bytes() as i32), // 14
        insn(LDXW, 2, 1, 16, 0),                                  // 15 rx_queue_index
        insn(LD_DW_IMM, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),         // 16 r1 = map
        insn(0, 0, 0, 0, 0),                                      // 17 (upper half)
        insn(MOV64_K, 3, 0, 0, XDP_PASS),                         // 18 fallback action
        insn(CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),               // 19
        insn(EXIT, 0, 0, 0, 0),                                   // 20
        insn(MOV64_K, 0, 0, 0, XDP_PASS),                         // 21 PASS
        insn(EXIT, 0, 0, 0, 0),                                   // 22
    ]
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
}

#[repr(C)]
#[derive(Default)]
struct MapUpdateAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// `bpf(cmd, attr)`; a non-negative result (an fd for the creating commands).
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed #[repr(C)] prefix of
    // `union bpf_attr` for `cmd`, and its exact size is passed: the kernel reads
    // (and for some commands writes) only those bytes and zero-fills the rest.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: `fd` was just returned by bpf(2) as a new descriptor that nothing
    // else owns.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// The loaded and attached feed filter. Dropping it detaches the program.
#[derive(Debug)]
pub(crate) struct FeedFilter {
    // Field order is drop order: detach (close the link) first.
    _link: OwnedFd,
    _prog: OwnedFd,
    _map: OwnedFd,
}

impl FeedFilter {
    /// Load the program for `port`, put the AF_XDP socket `xsk_fd` in its map
    /// at `queue`, and attach it to `ifindex` in `attach` mode.
    pub(crate) fn attach(
        ifname: &str,
        ifindex: u32,
        queue: u32,
        port: u16,
        xsk_fd: RawFd,
        attach: XdpAttach,
    ) -> io::Result<FeedFilter> {
        let ctx = |what: &str, e: io::Error| {
            let hint = match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => {
                    format!(": {}", super::sys::NEED_PRIVILEGES)
                }
                Some(libc::EBUSY) | Some(libc::EEXIST) => format!(
                    ": another XDP program is attached to {ifname} \
                     (`ip link show {ifname}`; `ip link set dev {ifname} xdp off` removes one \
                     attached without a link)"
                ),
                _ => String::new(),
            };
            io::Error::new(e.kind(), format!("XDP feed filter: {what} failed: {e}{hint}"))
        };
        let mut m = MapCreateAttr {
            map_type: BPF_MAP_TYPE_XSKMAP,
            key_size: 4,
            value_size: 4,
            max_entries: queue + 1,
        };
        let map = owned(bpf(BPF_MAP_CREATE, &mut m).map_err(|e| ctx("creating the XSKMAP", e))?);

        let insns = program(port, map.as_raw_fd());
        let license = c"GPL";
        let mut log = vec![0u8; VERIFIER_LOG_LEN];
        let mut name = [0u8; 16];
        name[..11].copy_from_slice(b"tw_feed_udp");
        let mut p = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name,
            expected_attach_type: BPF_XDP,
            ..Default::default()
        };
        let prog = match bpf(BPF_PROG_LOAD, &mut p) {
            Ok(fd) => owned(fd),
            Err(e) => {
                // Load again with the verifier log on, to say why.
                p.log_level = 1;
                p.log_size = log.len() as u32;
                p.log_buf = log.as_mut_ptr() as u64;
                let _ = bpf(BPF_PROG_LOAD, &mut p);
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]);
                return Err(ctx(&format!("loading the program (verifier: {text})"), e));
            }
        };

        let key = queue;
        let value = xsk_fd as u32;
        let mut u = MapUpdateAttr {
            map_fd: map.as_raw_fd() as u32,
            key: &key as *const u32 as u64,
            value: &value as *const u32 as u64,
            ..Default::default()
        };
        bpf(BPF_MAP_UPDATE_ELEM, &mut u)
            .map_err(|e| ctx("inserting the socket in the XSKMAP", e))?;

        let flags = match attach {
            XdpAttach::Driver => XDP_FLAGS_DRV_MODE,
            XdpAttach::Skb | XdpAttach::None => XDP_FLAGS_SKB_MODE,
        };
        let mut l = LinkCreateAttr {
            prog_fd: prog.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags,
        };
        let link =
            owned(bpf(BPF_LINK_CREATE, &mut l).map_err(|e| ctx("attaching to the interface", e))?);
        Ok(FeedFilter { _link: link, _prog: prog, _map: map })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_land_on_pass() {
        let p = program(0x1234, 7);
        for (pc, i) in p.iter().enumerate() {
            if matches!(i.code, JGT_X | JNE_K | JSET_K) {
                assert_eq!(pc as i16 + 1 + i.off, 21, "jump at {pc}");
            }
        }
        assert_eq!(p[21], insn(MOV64_K, 0, 0, 0, XDP_PASS));
        // Port compared in load (little-endian) order.
        assert_eq!(p[14].imm, 0x3412);
        assert_eq!(p[16].regs, (BPF_PSEUDO_MAP_FD << 4) | 1);
        assert_eq!(p[16].imm, 7);
    }

    #[test]
    fn insn_is_eight_bytes() {
        assert_eq!(std::mem::size_of::<Insn>(), 8);
    }
}
