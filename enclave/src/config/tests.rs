//! Configuration parsing: defaults, strictness, the firmware backends' keys.
#![allow(clippy::unwrap_used)]
use super::*;

const DIGEST: &str = "sha384:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f";

fn good() -> String {
    format!(
        r#"firmware = "simulated"
sim_dir = "/tmp/sim"

[key_broker]
address = "127.0.0.1:7443"
certificate_sha256 = "{}"

[[models]]
name = "mlp"
digest = "{DIGEST}"
"#,
        "ab".repeat(32)
    )
}

#[test]
fn parses_with_defaults_and_digest_of_exact_bytes() {
    let text = good();
    let c = Config::from_bytes(text.as_bytes()).unwrap();
    assert_eq!(
        c.firmware,
        FirmwareConfig::Simulated {
            sim_dir: "/tmp/sim".into(),
            withhold_certificates: false,
        }
    );
    assert_eq!(c.key_broker.host, "127.0.0.1");
    assert_eq!(c.key_broker.port, 7443);
    assert_eq!(c.key_broker.certificate_sha256, [0xab; 32]);
    assert_eq!(c.models[0].name, "mlp");
    assert_eq!(c.models[0].digest.to_string(), DIGEST);
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.limits.max_concurrent_requests, 64);
    assert_eq!(c.log_level, LogLevel::Info);
    // One more byte (a trailing newline) changes the digest, not the meaning.
    let c2 = Config::from_bytes(format!("{text}\n").as_bytes()).unwrap();
    assert_ne!(c.digest, c2.digest);
    assert_eq!(c.models, c2.models);
    let with_limits = format!("{text}\n[limits]\nmax_body_bytes = 100\n");
    let c3 = Config::from_bytes(with_limits.as_bytes()).unwrap();
    assert_eq!(c3.limits.max_body_bytes, 100);
    assert_eq!(c3.limits.max_tensor_elements, 16 * 1024 * 1024);
}

#[test]
fn rejects_precisely() {
    let g = good();
    let cases: Vec<(String, &str)> = vec![
        (
            g.replace("firmware = \"simulated\"\n", ""),
            "missing field `firmware`",
        ),
        (
            g.replace("\"simulated\"", "\"snp\""),
            "unknown variant `snp`",
        ),
        (
            g.replace("sim_dir = \"/tmp/sim\"\n", ""),
            "`sim_dir` is required",
        ),
        (
            g.replace("\"simulated\"", "\"sev-guest\""),
            "`sim_dir` is only allowed",
        ),
        (format!("{g}extra = 1\n"), "unknown field `extra`"),
        (g.replace("address =", "addr ="), "unknown field `addr`"),
        (g.replace("127.0.0.1:7443", "127.0.0.1"), "HOST:PORT"),
        (g.replace("127.0.0.1:7443", "127.0.0.1:0"), "HOST:PORT"),
        (g.replace(&"ab".repeat(32), "abcd"), "64 hex digits"),
        (
            g.replace("name = \"mlp\"", "name = \"a/b\""),
            "models[0].name",
        ),
        (g.replace("sha384:00", "sha384:zz"), "models[0].digest"),
        (g.replace("sha384:", "sha256:"), "models[0].digest"),
        (
            g.split("[[models]]").next().unwrap().to_owned(),
            "at least one [[models]]",
        ),
        (
            format!("{g}\n[[models]]\nname = \"mlp\"\ndigest = \"{DIGEST}\"\n"),
            "appears twice",
        ),
        (
            format!("{g}\n[limits]\nmax_body_bytes = 0\n"),
            "limits.max_body_bytes",
        ),
        (
            format!("{g}\n[limits]\nmax_bodies = 1\n"),
            "unknown field `max_bodies`",
        ),
    ];
    for (text, want) in cases {
        let err = Config::from_bytes(text.as_bytes()).unwrap_err().to_string();
        assert!(err.contains(want), "{err}\nwanted: {want}\n{text}");
    }
    let hw = g
        .replace("\"simulated\"", "\"configfs-tsm\"")
        .replace("sim_dir = \"/tmp/sim\"\n", "");
    assert_eq!(
        Config::from_bytes(hw.as_bytes()).unwrap().firmware,
        FirmwareConfig::ConfigfsTsm(HardwareOptions::default())
    );
}

#[test]
fn hardware_options() {
    let g = good();
    let hw = |fw: &str, extra: &str| {
        let text = g
            .replace(
                "firmware = \"simulated\"\n",
                &format!("firmware = \"{fw}\"\n{extra}"),
            )
            .replace("sim_dir = \"/tmp/sim\"\n", "");
        Config::from_bytes(text.as_bytes()).map(|c| c.firmware)
    };
    assert_eq!(
        hw("configfs-tsm", "vcek_cache = \"/var/vcek\"\nvmpl = 2\n").unwrap(),
        FirmwareConfig::ConfigfsTsm(HardwareOptions {
            vcek_cache: Some("/var/vcek".into()),
            vmpl: 2
        })
    );
    assert_eq!(
        hw("sev-guest", "vcek_cache = \"/var/vcek\"\n").unwrap(),
        FirmwareConfig::SevGuest(HardwareOptions {
            vcek_cache: Some("/var/vcek".into()),
            vmpl: 0
        })
    );
    assert_eq!(
        hw("coco-aa", "").unwrap(),
        FirmwareConfig::CocoAa(CocoAaOptions {
            url: "http://127.0.0.1:8006".into(),
            vcek_cache: None
        })
    );
    assert!(hw("coco-aa", "vmpl = 1\n").is_err());
    assert!(hw("configfs-tsm", "aa_url = \"http://127.0.0.1:1\"\n").is_err());
    let err = |r: Result<FirmwareConfig, ConfigError>| r.unwrap_err().to_string();
    // sev-guest without a VCEK cache gets its VCEK through the host's collateral service, unless that
    // is off too.
    assert!(hw("sev-guest", "").is_ok());
    assert!(err(hw("sev-guest", "collateral = \"off\"\n")).contains("set `vcek_cache`"));
    assert!(err(hw("configfs-tsm", "collateral = \"kds\"\n")).contains("collateral"));
    assert!(
        err(hw("configfs-tsm", "sim_withhold_certificates = true\n"))
            .contains("only allowed with firmware = \"simulated\"")
    );
    let withheld = g.replace("sim_dir =", "sim_withhold_certificates = true\nsim_dir =");
    let c = Config::from_bytes(withheld.as_bytes()).unwrap();
    assert!(matches!(
        c.firmware,
        FirmwareConfig::Simulated {
            withhold_certificates: true,
            ..
        }
    ));
    assert_eq!(c.collateral, CollateralSource::Host);
    assert!(err(hw("configfs-tsm", "vmpl = 4\n")).contains("vmpl must be"));
    let sim = g.replace("sim_dir =", "vmpl = 0\nsim_dir =");
    assert!(Config::from_bytes(sim.as_bytes())
        .unwrap_err()
        .to_string()
        .contains("`vmpl` is only allowed"));
    let sim = g.replace("sim_dir =", "vcek_cache = \"/x\"\nsim_dir =");
    assert!(Config::from_bytes(sim.as_bytes())
        .unwrap_err()
        .to_string()
        .contains("`vcek_cache` is only allowed"));
}

#[test]
fn ipv6_broker() {
    assert_eq!(
        split_host_port("[::1]:7443").unwrap(),
        ("::1".to_owned(), 7443)
    );
    assert!(split_host_port("::1:7443").is_err());
    assert_eq!(
        split_host_port("broker.example:443").unwrap(),
        ("broker.example".to_owned(), 443)
    );
}

#[test]
fn azure_vtpm_keys() {
    let g = good();
    let azure = |extra: &str| {
        let text = g
            .replace(
                "firmware = \"simulated\"\n",
                &format!("firmware = \"azure-vtpm\"\n{extra}"),
            )
            .replace("sim_dir = \"/tmp/sim\"\n", "");
        Config::from_bytes(text.as_bytes())
    };
    let c = azure("").unwrap();
    assert_eq!(
        c.firmware,
        FirmwareConfig::AzureVtpm(AzureOptions {
            tpm_device: "/dev/tpmrm0".into(),
            simulated: None
        })
    );
    assert_eq!(c.firmware.name(), "azure-vtpm");
    assert_eq!(
        azure("collateral = \"thim\"\n").unwrap().collateral,
        CollateralSource::Thim
    );
    let simulated = azure("tpm_swtpm = \"127.0.0.1:2321\"\nsim_dir = \"/tmp/sim2\"\n").unwrap();
    assert!(matches!(
        simulated.firmware,
        FirmwareConfig::AzureVtpm(AzureOptions {
            simulated: Some(_),
            ..
        })
    ));
    let err = |extra: &str| azure(extra).unwrap_err().to_string();
    assert!(err("tpm_swtpm = \"127.0.0.1:2321\"\n").contains("go together"));
    assert!(err("vcek_cache = \"/x\"\n").contains("not"));
    assert!(
        err("tpm_device = \"/dev/tpm0\"\ntpm_swtpm = \"a:1\"\nsim_dir = \"/s\"\n")
            .contains("two vTPMs")
    );
    // Azure's keys with another backend.
    let sim = g.replace("sim_dir =", "tpm_device = \"/dev/tpmrm0\"\nsim_dir =");
    assert!(Config::from_bytes(sim.as_bytes())
        .unwrap_err()
        .to_string()
        .contains("azure-vtpm"));
    let sim = g.replace("sim_dir =", "collateral = \"thim\"\nsim_dir =");
    assert!(Config::from_bytes(sim.as_bytes())
        .unwrap_err()
        .to_string()
        .contains("thim"));
}

/// Issue 21, item 5: with pinned client certificates, anonymous access is off unless asked for.
#[test]
fn anonymous_clients_are_refused_where_certificates_are_pinned_unless_allowed() {
    use crate::config::ClientsConfig;
    let pin = "ab".repeat(32);
    let clients = |text: &str| -> ClientsConfig { toml::from_str(text).unwrap() };
    assert!(clients("").anonymous_allowed());
    assert!(!clients(&format!("certificate_sha256 = [\"{pin}\"]")).anonymous_allowed());
    assert!(clients(&format!(
        "certificate_sha256 = [\"{pin}\"]\nallow_anonymous = true"
    ))
    .anonymous_allowed());
    assert!(!clients("allow_anonymous = false").anonymous_allowed());
}
