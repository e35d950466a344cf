//! A throwaway PKI for the TLS tests, made with the `openssl` command.

/// Certificates for mutual TLS tests, made with the `openssl` command: a CA and two
/// certificates it signed (valid for 127.0.0.1 and localhost, server and client use), and a
/// look-alike certificate signed by another CA.
pub struct TestPki {
    pub service: trickle_service_kit::tls::TlsConfig,
    /// A second certificate from the trusted CA (another client).
    pub second: trickle_service_kit::tls::TlsConfig,
    /// Same names and uses, signed by a CA nobody trusts.
    pub rogue: trickle_service_kit::tls::TlsConfig,
    pub ca_pem: String,
    _dir: tempfile::TempDir,
}

fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl command is needed for the TLS tests");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const P256: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
];

impl TestPki {
    pub fn create() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |name: &str| dir.path().join(name).display().to_string();
        for ca in ["trusted", "rogue"] {
            let subject = format!("/CN={ca} test CA");
            let (key, cert) = (path(&format!("{ca}-ca.key")), path(&format!("{ca}-ca.pem")));
            let mut args = vec!["req", "-x509"];
            args.extend(P256);
            args.extend([
                "-keyout", &key, "-out", &cert, "-days", "2", "-subj", &subject,
            ]);
            args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
            args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
            openssl(&args);
        }
        let ca_pem = std::fs::read_to_string(path("trusted-ca.pem")).expect("ca");
        let mut pki = Self {
            ca_pem,
            service: Default::default(),
            second: Default::default(),
            rogue: Default::default(),
            _dir: dir,
        };
        pki.service = pki.issue_by("service", "service.trickle.test", "trusted");
        pki.second = pki.issue_by("second", "second.trickle.test", "trusted");
        pki.rogue = pki.issue_by("rogue", "service.trickle.test", "rogue");
        pki
    }

    /// A certificate from the trusted CA for `127.0.0.1`, `localhost` and `identity` (a DNS
    /// name that `allowed_callers` can name), server and client use.
    pub fn issue(&self, identity: &str) -> trickle_service_kit::tls::TlsConfig {
        self.issue_by(&identity.replace('.', "-"), identity, "trusted")
    }

    fn issue_by(
        &self,
        file: &str,
        identity: &str,
        ca: &str,
    ) -> trickle_service_kit::tls::TlsConfig {
        let path = |name: &str| self._dir.path().join(name).display().to_string();
        let ext = path(&format!("{file}.ext"));
        std::fs::write(
            &ext,
            format!(
                "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:{identity}\n\
                 extendedKeyUsage=serverAuth,clientAuth\n\
                 basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            ),
        )
        .expect("write extensions");
        let (key, csr, cert) = (
            path(&format!("{file}.key")),
            path(&format!("{file}.csr")),
            path(&format!("{file}.pem")),
        );
        let subject = format!("/CN=trickle-{file}");
        let mut args = vec!["req"];
        args.extend(P256);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
        openssl(&args);
        let (ca_cert, ca_key) = (path(&format!("{ca}-ca.pem")), path(&format!("{ca}-ca.key")));
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_cert,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
        trickle_service_kit::tls::TlsConfig {
            ca_file: path("trusted-ca.pem"),
            cert_file: cert,
            key_file: key,
            allowed_callers: Vec::new(),
        }
    }

    /// The trusted CA's certificate file.
    pub fn ca_file(&self) -> String {
        self._dir
            .path()
            .join("trusted-ca.pem")
            .display()
            .to_string()
    }
}

// ---- log capture ------------------------------------------------------------------------
