//! Launch digests against sev-snp-measure's, hashes table and VMSA layouts, ID blocks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

#[test]
fn cpu_signatures_match_qemu_models() {
    assert_eq!(vcpu_sig_of("EPYC-v4"), Some(0x0080_0f12));
    assert_eq!(vcpu_sig_of("EPYC-Milan"), Some(0x00a0_0f11));
    assert_eq!(vcpu_sig_of("EPYC-Genoa"), Some(0x00a1_0f10));
    assert_eq!(vcpu_sig_of("EPYC-Turin"), Some(0x00b0_0f00));
    assert_eq!(vcpu_sig_of("EPYC-Bogus"), None);
}

#[test]
fn guids_use_the_edk2_byte_order() {
    assert_eq!(
        ovmf::OVMF_TABLE_FOOTER_GUID.mixed_endian_bytes(),
        [
            0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a,
            0x08, 0x2d
        ]
    );
}

#[test]
fn hashes_table_layout() {
    let t = sev_hashes_table(b"kernel", None, None);
    assert_eq!(t.len(), 176);
    assert_eq!(&t[16..18], &168u16.to_le_bytes());
    assert_eq!(&t[34..36], &50u16.to_le_bytes());
    // An empty command line is hashed as a lone NUL.
    assert_eq!(&t[36..68], &sha256(b"\0"));
    assert_eq!(&t[136..168], &sha256(b"kernel"));
    assert_eq!(&t[168..], &[0; 8]);
}

#[test]
fn rejects_what_is_not_sev_ovmf() {
    fn input(ovmf: &[u8]) -> LaunchInput<'_> {
        LaunchInput {
            vcpus: 1,
            vcpu_sig: 0,
            vmm: VmmType::Qemu,
            guest_features: 1,
            ovmf,
            kernel: None,
            initrd: None,
            append: None,
        }
    }
    assert_eq!(
        snp_launch_digest(&input(&[0; 4095])).unwrap_err(),
        MeasureError::OvmfSize { len: 4095 }
    );
    assert_eq!(
        snp_launch_digest(&input(&[0; 8192])).unwrap_err(),
        MeasureError::NoSevMetadata
    );
    assert_eq!(
        snp_launch_digest(&LaunchInput {
            vcpus: 0,
            ..input(&[0; 8192])
        })
        .unwrap_err(),
        MeasureError::NoVcpus
    );
}

#[test]
fn vmsa_fields_by_vmm() {
    let q = vmsa_page(BSP_EIP, 0x00a1_0f10, VmmType::Qemu, 1);
    assert_eq!(&q[0x310..0x318], &0x00a1_0f10u64.to_le_bytes());
    assert_eq!(&q[0x408..0x40c], &0x1f80u32.to_le_bytes());
    assert_eq!(&q[0x012..0x014], &0x9bu16.to_le_bytes());
    let e = vmsa_page(BSP_EIP, 0x00a1_0f10, VmmType::Ec2, 1);
    assert_eq!(&e[0x310..0x318], &0x600u64.to_le_bytes());
    assert_eq!(&e[0x012..0x014], &0x9au16.to_le_bytes());
    assert_eq!(&e[0x408..0x40c], &[0; 4]);
    let ap = vmsa_page(0x80b004, 0, VmmType::Ec2, 1);
    assert_eq!(&ap[0x012..0x014], &0x9bu16.to_le_bytes());
    assert_eq!(&ap[0x178..0x180], &0xb004u64.to_le_bytes());
    assert_eq!(&ap[0x018..0x020], &0x80_0000u64.to_le_bytes());
}
