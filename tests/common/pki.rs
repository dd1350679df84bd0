//! A throw-away public-key infrastructure for the tests of TLS (the directory's slapd, PostgreSQL):
//! a CA, a server certificate it signs, and another CA that signed nothing, made with Debian's
//! `openssl` command in a directory of the test's own. Part of `tests/common` (`common::pki`).

use std::process::Command;

/// Runs `openssl` with `args` in `dir`, failing the fixture with its output if it fails.
pub fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian: apt-get install openssl; scripts/test does it)");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// Makes, in `dir`: `ca.pem` (a CA), `server.pem` and `server.key` (its certificate for
/// IP:127.0.0.1 and DNS:localhost), and `other-ca.pem` (a CA that signed nothing). EC P-256 keys,
/// valid for a week: generated in a blink, and accepted by both GnuTLS (slapd) and rustls.
pub fn make_certificates(dir: &std::path::Path) {
    std::fs::write(
        dir.join("pki.cnf"),
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n\
         [ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n\
         subjectKeyIdentifier = hash\n\
         [server]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1, DNS:localhost\n\
         subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    for (name, subject) in [
        ("ca", "/CN=labcron test CA"),
        ("other-ca", "/CN=some other CA"),
    ] {
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        let mut args = vec!["req", "-x509", "-config", "pki.cnf", "-extensions", "ca"];
        args.extend(ec);
        args.extend([
            "-keyout", &key, "-out", &pem, "-days", "7", "-subj", subject,
        ]);
        openssl(dir, &args);
    }
    let mut args = vec!["req", "-new", "-config", "pki.cnf"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &args);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "7",
            "-extfile",
            "pki.cnf",
            "-extensions",
            "server",
            "-out",
            "server.pem",
        ],
    );
}
