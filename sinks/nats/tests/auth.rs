//! Every way `plugins.toml` lets a host prove who it is to NATS, against a real `nats-server`
//! that demands it: a token, a user and password, an nkey, TLS verified by a CA and TLS with a
//! client certificate. Each one connects and writes the bucket with the right secret, and is
//! refused with the wrong one, as an error that is not "server unavailable" (so the plugin
//! says so instead of retrying quietly).
//!
//! Certificates are made by the `openssl` command at test time; nkeys by the `nkeys` crate
//! (the one async-nats signs with).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use atm_core::fleet::{BucketSettings, ConnectError, NatsConnection, connect, open_bucket};
use atm_core::testing::nats::{NatsServer, available};

fn secret(dir: &Path, name: &str, text: &str) -> Option<String> {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    Some(path.display().to_string())
}

/// Connects with `cfg` and writes and reads one key of the bucket.
async fn round_trip(cfg: &NatsConnection) -> Result<(), ConnectError> {
    let (client, _) = connect(cfg, "atm-auth-test").await?;
    let store = open_bucket(&client, cfg, Some(BucketSettings { replicas: 1 }))
        .await
        .unwrap();
    store.put("h.auth", "ok".into()).await.unwrap();
    let value = store.get("h.auth").await.unwrap().unwrap();
    assert_eq!(&value[..], b"ok");
    Ok(())
}

fn refused(result: Result<(), ConnectError>, what: &str) {
    match result {
        Ok(()) => panic!("{what}: a wrong secret was let in"),
        Err(e) => {
            assert!(!e.is_unavailable(), "{what}: {e} is not 'unavailable'");
            let text = e.to_string();
            assert!(
                text.contains("127.0.0.1"),
                "{what}: names the server: {text}"
            );
        }
    }
}

fn base(server: &NatsServer) -> NatsConnection {
    NatsConnection {
        servers: vec![server.url()],
        ..NatsConnection::default()
    }
}

#[tokio::test]
async fn a_token_a_password_and_an_nkey_each_let_in_only_their_holder() {
    if !available() {
        panic!("nats-server is not installed (.ci/run installs it)");
    }
    let dir = tempfile::tempdir().unwrap();
    let user = nkeys::KeyPair::new_user();
    let stranger = nkeys::KeyPair::new_user();
    let methods: Vec<(&str, String, NatsConnection, NatsConnection)> = vec![
        (
            "token",
            "authorization { token: \"t0ken-of-the-fleet\" }".to_owned(),
            NatsConnection {
                token_file: secret(dir.path(), "token", "t0ken-of-the-fleet\n"),
                ..NatsConnection::default()
            },
            NatsConnection {
                token_file: secret(dir.path(), "bad-token", "guess"),
                ..NatsConnection::default()
            },
        ),
        (
            "user and password",
            "authorization { users = [ { user: \"hub\", password: \"pa55word\" } ] }".to_owned(),
            NatsConnection {
                user: Some("hub".into()),
                password_file: secret(dir.path(), "password", "pa55word\n"),
                ..NatsConnection::default()
            },
            NatsConnection {
                user: Some("hub".into()),
                password_file: secret(dir.path(), "bad-password", "password"),
                ..NatsConnection::default()
            },
        ),
        (
            "nkey",
            format!(
                "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}",
                user.public_key()
            ),
            NatsConnection {
                nkey_file: secret(dir.path(), "nkey", &user.seed().unwrap()),
                ..NatsConnection::default()
            },
            NatsConnection {
                nkey_file: secret(dir.path(), "bad-nkey", &stranger.seed().unwrap()),
                ..NatsConnection::default()
            },
        ),
    ];
    for (what, authorization, good, bad) in methods {
        let server_dir = dir
            .path()
            .join(format!("server-{}", what.replace(' ', "-")));
        std::fs::create_dir_all(&server_dir).unwrap();
        let server = NatsServer::start(&server_dir, &authorization);
        let with = |c: NatsConnection| NatsConnection {
            servers: vec![server.url()],
            ..c
        };
        round_trip(&with(good))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", server.log()));
        refused(round_trip(&with(bad)).await, what);
        refused(round_trip(&base(&server)).await, "no secret at all");
    }
}

#[tokio::test]
async fn a_missing_or_empty_secret_file_is_named_before_any_connection() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = NatsConnection {
        token_file: Some(dir.path().join("absent").display().to_string()),
        ..NatsConnection::default()
    };
    let e = round_trip(&cfg).await.unwrap_err();
    assert!(
        matches!(e, ConnectError::Secret { what: "token", .. }),
        "{e}"
    );
    assert!(e.to_string().contains("absent"), "{e}");
    let cfg = NatsConnection {
        nkey_file: secret(dir.path(), "empty", "\n"),
        ..NatsConnection::default()
    };
    let e = round_trip(&cfg).await.unwrap_err();
    assert!(matches!(e, ConnectError::EmptySecret { .. }), "{e}");
    let cfg = NatsConnection {
        creds_file: secret(dir.path(), "bad.creds", "not a creds file"),
        ..NatsConnection::default()
    };
    let e = round_trip(&cfg).await.unwrap_err();
    assert!(
        matches!(
            e,
            ConnectError::Secret {
                what: "credentials",
                ..
            }
        ),
        "{e}"
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files in `dir`.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl (.ci/run installs it): {e}"));
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=atm test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&ca);
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        let ext = format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
        );
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
        run(&req);
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
}

#[tokio::test]
async fn tls_verified_by_a_ca_and_with_a_client_certificate() {
    if !available() {
        panic!("nats-server is not installed (.ci/run installs it)");
    }
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    make_certificates(&certs);
    let file = |name: &str| Some(certs.join(name).display().to_string());
    let tls = |verify: bool| {
        format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: {verify}\n  timeout: 2\n}}",
            certs.join("server.pem").display(),
            certs.join("server.key").display(),
            certs.join("ca.pem").display(),
        )
    };

    // The server proves itself; the client checks it against the CA.
    let one_way = dir.path().join("one-way");
    std::fs::create_dir_all(&one_way).unwrap();
    let server = NatsServer::start(&one_way, &tls(false));
    let verified = NatsConnection {
        tls_ca_file: file("ca.pem"),
        ..base(&server)
    };
    round_trip(&verified)
        .await
        .unwrap_or_else(|e| panic!("TLS with the CA: {e}\n{}", server.log()));
    // Without the CA, the server's certificate is not trusted (the system's roots do not
    // know this CA).
    let untrusted = NatsConnection {
        tls_required: true,
        ..base(&server)
    };
    refused(round_trip(&untrusted).await, "TLS without the CA");
    drop(server);

    // The server also demands a client certificate signed by the CA.
    let mutual = dir.path().join("mutual");
    std::fs::create_dir_all(&mutual).unwrap();
    let server = NatsServer::start(&mutual, &tls(true));
    let with_cert = NatsConnection {
        tls_cert_file: file("client.pem"),
        tls_key_file: file("client.key"),
        ..verified.clone()
    };
    let with_cert = NatsConnection {
        servers: vec![server.url()],
        ..with_cert
    };
    round_trip(&with_cert)
        .await
        .unwrap_or_else(|e| panic!("mutual TLS: {e}\n{}", server.log()));
    let without_cert = NatsConnection {
        servers: vec![server.url()],
        ..verified
    };
    refused(
        round_trip(&without_cert).await,
        "mutual TLS without a client certificate",
    );
}
