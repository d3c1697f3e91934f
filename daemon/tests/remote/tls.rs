//! The client over TLS, against a BuildGrid of the test's own serving
//! `.ci/buildgrid/buildgrid-tls.yml`: certificates made with `openssl` at test
//! time (a CA, a server certificate for 127.0.0.1 and localhost, a client
//! certificate, and a second CA that signed nothing the server shows), one TLS
//! port and one that requires a client certificate, and BuildGrid's JWT
//! authorization, so that every call must carry the access token.

use std::path::Path;
use std::process::Command;

use super::bgd::{Bgd, free_port, script, venv};
use super::{nonce, runtime, sample_tree, server, side};
use daemon::manager::build::Outcome;
use daemon::project::CacheKey;
use daemon::remote::{
    BuildResult, ClientIdentity, Endpoint, Function, Lookup, Remote, RemoteError, TlsConfig,
};
use treediff::capture::CaptureMode;

/// Runs `openssl` in `dir` with the words of `args` and then `-subj subject`.
fn openssl(dir: &Path, args: &str, subject: &str) {
    let output = Command::new("openssl")
        .args(args.split_whitespace())
        .args(["-subj", subject])
        .current_dir(dir)
        .output()
        .expect("openssl (the tests make their certificates with it)");
    assert!(
        output.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A new P-256 key `name.key`, as `openssl req` takes it.
fn new_key(name: &str) -> String {
    format!("-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}.key")
}

/// A CA `name` (name.key, name.crt).
fn make_ca(dir: &Path, name: &str) {
    let key = new_key(name);
    openssl(
        dir,
        &format!(
            "req -x509 {key} -out {name}.crt -days 2 \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
        ),
        &format!("/CN=ws test {name}"),
    );
}

/// A certificate `name` signed by the CA `ca`, with the extensions `ext`.
fn make_cert(dir: &Path, ca: &str, name: &str, serial: &str, ext: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    let key = new_key(name);
    openssl(
        dir,
        &format!("req {key} -out {name}.csr"),
        &format!("/CN=ws test {name}"),
    );
    openssl(
        dir,
        &format!(
            "x509 -req -in {name}.csr -CA {ca}.crt -CAkey {ca}.key -set_serial {serial} \
             -days 2 -out {name}.crt -extfile {name}.ext"
        ),
        &format!("/CN=ws test {name}"),
    );
}

/// An HS256 JWT for `secret`, valid for an hour, made by the venv's PyJWT
/// (BuildGrid's own dependency).
fn make_token(secret_file: &Path) -> String {
    let output = Command::new(venv().join("bin/python"))
        .args([
            "-c",
            "import jwt, sys, time; print(jwt.encode({'sub': 'ws-test', 'exp': int(time.time()) + 3600}, open(sys.argv[1]).read(), algorithm='HS256'))",
        ])
        .arg(secret_file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "making a JWT: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

fn must_fail(rt: &tokio::runtime::Runtime, endpoint: &Endpoint) -> String {
    let err = Remote::connect_with(rt.handle().clone(), endpoint).unwrap_err();
    let message = err.to_string();
    assert!(message.contains(&endpoint.url), "{message}");
    message
}

#[test]
fn tls_mutual_tls_and_tokens_against_buildgrid() {
    if server("tls_mutual_tls_and_tokens_against_buildgrid").is_none() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    make_ca(dir, "ca");
    make_ca(dir, "other-ca");
    make_cert(
        dir,
        "ca",
        "server",
        "2",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    );
    make_cert(
        dir,
        "ca",
        "client",
        "3",
        "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
    );
    std::fs::write(dir.join("jwt.secret"), nonce("jwt secret")).unwrap();
    let token = make_token(&dir.join("jwt.secret"));

    let (port, mtls_port) = (free_port(), free_port());
    let state = tempfile::tempdir().unwrap();
    let bgd = Bgd::start(
        state.path(),
        port,
        Some(&script("buildgrid-tls.yml")),
        &[
            ("BGD_MTLS_PORT", mtls_port.to_string()),
            ("BGD_TLS_DIR", dir.display().to_string()),
        ],
    );

    let rt = runtime();
    let url = format!("grpcs://127.0.0.1:{port}");
    let trusted = TlsConfig {
        ca_pem: Some(read(dir, "ca.crt")),
        client: None,
        token: Some(token.clone()),
    };

    // A round trip over TLS with the token: a batch and a ByteStream (the 5 MiB
    // file) each way, and a build result.
    let (a, b) = (side(), side());
    let nonce = nonce("tls");
    let src = sample_tree(a.dir.path(), &nonce);
    let tree = a.capture(&src, CaptureMode::Source);
    let endpoint = Endpoint::new(&url, "").with_tls(trusted.clone());
    let remote = Remote::connect_with(rt.handle().clone(), &endpoint)
        .unwrap_or_else(|e| panic!("{e}\n{}", bgd.log_tail()));
    assert_eq!(remote.function(), Function::Sha256);
    let pushed = remote.push_tree(&a.store, &a.map, tree).unwrap();
    assert!(pushed.sent_bytes > 5 << 20, "{pushed:?}");
    assert_eq!(remote.stats().bytestream_writes, 1);
    assert_eq!(
        remote
            .pull_tree(&b.store, &b.map, pushed.roots[0], Some(tree))
            .unwrap(),
        tree
    );
    assert_eq!(remote.stats().bytestream_reads, 1);
    let key = CacheKey::parse(&nonce).unwrap();
    let result = BuildResult {
        outcome: Outcome::Success,
        artifact: Some(tree),
        buildtree: None,
        log: None,
        failure: None,
        // The tree stands for its own sources, so that `ws pull KEY` below
        // can record it.
        sources: Some(tree),
        info: Default::default(),
    };
    remote.put_result(&a.store, &a.map, &key, &result).unwrap();
    let c = side();
    assert_eq!(
        remote.get_result(&c.store, &c.map, &key).unwrap(),
        Lookup::Hit(result)
    );

    // The same server through a user's configuration: the daemon reads the
    // CA and the token files named there (relative to it), as the caller.
    std::fs::write(dir.join("token"), format!("{token}\n")).unwrap();
    let config = dir.join("config.toml");
    let user = daemon::manager::RemoteOptions {
        user_config: Some(config.clone()),
        disabled: false,
    };
    let manager_state = tempfile::tempdir().unwrap();
    let m = daemon::Manager::open(daemon::StateDir::new(manager_state.path().to_owned())).unwrap();
    let by_key = || daemon::manager::build::TransferTarget::Key {
        key: key.clone(),
        project_dir: None,
    };
    let root = daemon::Caller { uid: 0, gid: 0 };
    std::fs::write(
        &config,
        format!("[[remote]]\nurl = \"{url}\"\nserver-cert = \"ca.crt\"\n"),
    )
    .unwrap();
    let e = m.pull(root, by_key(), &user).unwrap_err();
    assert_eq!(
        e.kind(),
        daemon::ErrorKind::AccessDenied,
        "without the token: {e}"
    );
    std::fs::write(
        &config,
        format!(
            "[[remote]]\nurl = \"{url}\"\nserver-cert = \"ca.crt\"\naccess-token-file = \"token\"\n"
        ),
    )
    .unwrap();
    let pulled = m.pull(root, by_key(), &user).unwrap();
    assert_eq!(pulled.artifact, Some(tree));
    assert_eq!(pulled.transfers[0].url, url);
    // By host name too (the certificate names localhost).
    let by_name =
        Endpoint::new(format!("grpcs://localhost:{port}"), "main").with_tls(trusted.clone());
    Remote::connect_with(rt.handle().clone(), &by_name).unwrap();

    // A server certificate the client does not trust: the other CA, or the
    // system's roots.
    for tls in [
        Some(TlsConfig {
            ca_pem: Some(read(dir, "other-ca.crt")),
            ..trusted.clone()
        }),
        None,
    ] {
        let endpoint = Endpoint {
            tls,
            ..Endpoint::new(&url, "")
        };
        let message = must_fail(&rt, &endpoint);
        eprintln!("untrusted: {message}");
        for part in [
            "Capabilities.GetCapabilities",
            "UnknownIssuer",
            "TLS connection failed",
        ] {
            assert!(message.contains(part), "{part:?} not in {message}");
        }
    }

    // No token: the server refuses the call.
    let message = must_fail(
        &rt,
        &Endpoint::new(&url, "").with_tls(TlsConfig {
            token: None,
            ..trusted.clone()
        }),
    );
    eprintln!("no token: {message}");
    assert!(
        message.contains("UNAUTHENTICATED") || message.contains("PERMISSION_DENIED"),
        "{message}"
    );
    assert!(message.contains("authorization settings"), "{message}");
    // A token the server did not sign, likewise.
    let message = must_fail(
        &rt,
        &Endpoint::new(&url, "").with_tls(TlsConfig {
            token: Some(format!("{token}x")),
            ..trusted.clone()
        }),
    );
    assert!(
        message.contains("UNAUTHENTICATED") || message.contains("PERMISSION_DENIED"),
        "{message}"
    );

    // Mutual TLS: without a client certificate the handshake fails, with one
    // signed by the CA a push goes through.
    let mtls_url = format!("grpcs://127.0.0.1:{mtls_port}");
    let message = must_fail(&rt, &Endpoint::new(&mtls_url, "").with_tls(trusted.clone()));
    eprintln!("no client certificate: {message}");
    assert!(message.contains("client certificate"), "{message}");
    let with_cert = Endpoint::new(&mtls_url, "").with_tls(TlsConfig {
        client: Some(ClientIdentity {
            cert_pem: read(dir, "client.crt"),
            key_pem: read(dir, "client.key"),
        }),
        ..trusted.clone()
    });
    let remote = Remote::connect_with(rt.handle().clone(), &with_cert).unwrap();
    let small = a.dir.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    std::fs::write(small.join("f"), format!("mutual {nonce}\n")).unwrap();
    let small = a.capture(&small, CaptureMode::Source);
    assert_eq!(
        remote
            .push_tree(&a.store, &a.map, small)
            .unwrap()
            .sent_blobs,
        2
    );

    // TLS settings for a plain URL, and bad PEM: refused before connecting.
    let err = Remote::connect_with(
        rt.handle().clone(),
        &Endpoint::new(format!("grpc://127.0.0.1:{port}"), "").with_tls(trusted.clone()),
    )
    .unwrap_err();
    assert!(matches!(err, RemoteError::BadTls { .. }), "{err}");
    let err = Remote::connect_with(
        rt.handle().clone(),
        &Endpoint::new(&url, "").with_tls(TlsConfig {
            client: Some(ClientIdentity {
                cert_pem: read(dir, "client.crt"),
                key_pem: b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n"
                    .to_vec(),
            }),
            ..trusted
        }),
    )
    .unwrap_err();
    eprintln!("bad key: {err}");
    assert!(
        matches!(err, RemoteError::BadTls { .. }) && err.to_string().contains("client key"),
        "{err}"
    );
    drop(bgd);
}
