//! The VMSA page: a vCPU's initial register state as each VMM sets it (QEMU, EC2, GCE), which the launch
//! digest covers.

use super::{VmmType, BSP_EIP, PAGE_SIZE};

/// The VMSA (SEV-ES save area, AMD APM vol. 2 table B-4) a VMM creates for a vCPU starting at `eip`.
pub fn vmsa_page(eip: u64, vcpu_sig: u32, vmm: VmmType, guest_features: u64) -> [u8; PAGE_SIZE] {
    // (cs attributes, ss attributes, tr attributes, rdx, mxcsr, x87 fcw, g_pat)
    const PAT: u64 = 0x0007_0406_0007_0406; // AMD APM vol. 2 §A.3: the PAT MSR's reset value
    let (cs, ss, tr, rdx, mxcsr, fcw, g_pat): (u16, u16, u16, u64, u32, u16, u64) = match vmm {
        VmmType::Qemu => (0x9b, 0x93, 0x8b, u64::from(vcpu_sig), 0x1f80, 0x37f, PAT),
        // EC2 marks the BSP's code segment not accessed, and starts every vCPU with RDX = 0x600 (family
        // 6 model 0: the architectural reset value) instead of the CPUID signature.
        VmmType::Ec2 => (
            if eip == BSP_EIP { 0x9a } else { 0x9b },
            0x92,
            0x83,
            0x600,
            0,
            0,
            PAT,
        ),
        VmmType::Gce => (0x9b, 0x93, 0x8b, 0x600, 0, 0, 0x0007_0106),
    };
    let mut p = [0u8; PAGE_SIZE];
    // VMCB segment: selector u16, attrib u16, limit u32, base u64.
    let mut seg = |at: usize, selector: u16, attrib: u16, limit: u32, base: u64| {
        p[at..at + 2].copy_from_slice(&selector.to_le_bytes());
        p[at + 2..at + 4].copy_from_slice(&attrib.to_le_bytes());
        p[at + 4..at + 8].copy_from_slice(&limit.to_le_bytes());
        p[at + 8..at + 16].copy_from_slice(&base.to_le_bytes());
    };
    seg(0x000, 0, 0x93, 0xffff, 0); // ES
    seg(0x010, 0xf000, cs, 0xffff, eip & 0xffff_0000); // CS
    seg(0x020, 0, ss, 0xffff, 0); // SS
    seg(0x030, 0, 0x93, 0xffff, 0); // DS
    seg(0x040, 0, 0x93, 0xffff, 0); // FS
    seg(0x050, 0, 0x93, 0xffff, 0); // GS
    seg(0x060, 0, 0, 0xffff, 0); // GDTR
    seg(0x070, 0, 0x82, 0xffff, 0); // LDTR
    seg(0x080, 0, 0, 0xffff, 0); // IDTR
    seg(0x090, 0, tr, 0xffff, 0); // TR
    let mut u64_at = |at: usize, v: u64| p[at..at + 8].copy_from_slice(&v.to_le_bytes());
    u64_at(0x0d0, 0x1000); // EFER.SVME (KVM sets it)
    u64_at(0x148, 0x40); // CR4.MCE
    u64_at(0x158, 0x10); // CR0.ET
    u64_at(0x160, 0x400); // DR7
    u64_at(0x168, 0xffff_0ff0); // DR6
    u64_at(0x170, 0x2); // RFLAGS
    u64_at(0x178, eip & 0xffff); // RIP
    u64_at(0x268, g_pat); // G_PAT
    u64_at(0x310, rdx); // RDX
    u64_at(0x3b0, guest_features); // SEV_FEATURES
    u64_at(0x3e8, 0x1); // XCR0
    p[0x408..0x40c].copy_from_slice(&mxcsr.to_le_bytes()); // MXCSR
    p[0x410..0x412].copy_from_slice(&fcw.to_le_bytes()); // x87 FCW
    p
}
