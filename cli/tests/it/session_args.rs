//! Issue 22, item 6: `infer`, `bench` and `proxy` open attested sessions with one set of arguments (one
//! definition in the CLI): the same flags everywhere, `--client-cert` and the collateral flags included
//! (`bench` and `proxy` had neither), and the same rules (a client certificate needs its key; a policy that
//! pins no workload is a usage error).

use crate::common::cloister;

const SESSION_FLAGS: [&str; 7] = [
    "--endpoint <HOST:PORT>",
    "--policy <FILE>",
    "--collateral <FILE>",
    "--kds-url <URL>",
    "--cache <DIR>",
    "--client-cert <FILE>",
    "--client-key <FILE>",
];

#[test]
fn infer_bench_and_proxy_take_the_same_session_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let unpinned = tmp.path().join("unpinned.toml");
    std::fs::write(&unpinned, "").unwrap();
    let unpinned = unpinned.to_str().unwrap();
    for (command, rest) in [
        ("infer", &["--model", "m", "--input", "x.json"][..]),
        ("bench", &["--model", "m", "--input", "x.json"][..]),
        ("proxy", &[][..]),
    ] {
        let help = String::from_utf8(cloister(&[command, "--help"]).stdout).unwrap();
        for flag in SESSION_FLAGS {
            assert!(
                help.contains(flag),
                "cloister {command} --help lacks {flag}:\n{help}"
            );
        }
        // A certificate without its key: a usage error from the argument parser.
        let mut args = vec![command, "--endpoint", "127.0.0.1:9", "--policy", unpinned];
        args.extend_from_slice(rest);
        let mut with_cert = args.clone();
        with_cert.extend_from_slice(&["--client-cert", "c.pem"]);
        let o = cloister(&with_cert);
        assert_eq!(o.status.code(), Some(2), "cloister {command}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("--client-key"),
            "cloister {command}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // The same rule for the policy, before anything connects.
        let o = cloister(&args);
        assert_eq!(o.status.code(), Some(2), "cloister {command}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("workload_identity: not set"),
            "cloister {command}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
