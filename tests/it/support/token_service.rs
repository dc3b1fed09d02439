//! A token service following Distribution's token specification, in front of
//! which [`TokenRegistry`] runs the real Distribution registry with
//! `auth: token`. The registry checks every token it gets; this service is
//! the only stand-in.
//!
//! It issues RS256 JWTs whose header carries the signing certificate in
//! `x5c` (the registry's `rootcertbundle` holds it; key and certificate are
//! made with `openssl` at start, which also signs), with the claims `iss`,
//! `sub`, `aud`, `exp`, `nbf`, `iat`, `jti` and `access`. It answers GET
//! with Basic credentials (or none: anonymous) and the OAuth2 POST form
//! (`grant_type=password` or `refresh_token`, a refresh token returned when
//! asked with `access_type=offline`), grants per account (see [`grants`]),
//! leaves out the scopes a test refuses, issues tokens of a lifetime a test
//! chooses, and records every request it got.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{json, Value};

use super::{reap_after_exit, require, scratch_dir, Registry};

/// The accounts and their passwords.
pub const ALICE: &str = "alice";
pub const ALICE_PASS: &str = "alice-Pa55-w0rd-7x";
pub const BOB: &str = "bob";
pub const BOB_PASS: &str = "bob-Pa55-w0rd-3q";
pub const ADMIN: &str = "admin";
pub const ADMIN_PASS: &str = "admin-Pa55-w0rd-9k";

/// The `service` the registry names in its challenges.
pub const SERVICE: &str = "occy-test-registry";
const ISSUER: &str = "occy-test-token-service";
/// How long Distribution 2.8 accepts a token past its `exp` (and before its `nbf`).
pub const REGISTRY_LEEWAY_SECS: i64 = 60;

/// What the service grants, changeable while it runs.
#[derive(Clone, Debug)]
pub struct TokenPolicy {
    /// How long the registry accepts a token, in seconds: `exp` is set this
    /// far ahead minus the registry's leeway.
    pub life_secs: i64,
    /// The `expires_in` the answer announces (None: `life_secs`).
    pub announced_expires_in: Option<i64>,
    /// Scopes never granted, `TYPE:NAME:ACTION` (NAME may end in `*`).
    pub refused: Vec<String>,
    /// Repositories (patterns) whose pull is left out of a token that also
    /// carries a push scope: a registry forbidding cross-repository mounts
    /// from them.
    pub no_mount_from: Vec<String>,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy {
            life_secs: 300,
            announced_expires_in: None,
            refused: Vec::new(),
            no_mount_from: Vec::new(),
        }
    }
}

/// One request the service got.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub method: String,
    /// `password`, `refresh_token`, or empty for a GET.
    pub grant_type: String,
    /// Whether an `Authorization` header came.
    pub authorization: bool,
    /// The account authenticated (None: anonymous or refused).
    pub account: Option<String>,
    /// The scopes asked for.
    pub scopes: Vec<String>,
    /// The scopes granted (`TYPE:NAME:ACTION` each).
    pub granted: Vec<String>,
    pub status: u16,
    /// The token issued (to check logs never show it).
    pub token: Option<String>,
}

struct Shared {
    dir: PathBuf,
    cert_b64: String,
    policy: Mutex<TokenPolicy>,
    log: Mutex<Vec<TokenRequest>>,
    refresh_tokens: Mutex<Vec<(String, String)>>,
    serial: AtomicU64,
}

/// A running token service.
pub struct TokenService {
    /// `http://HOST:PORT/token`.
    pub realm: String,
    shared: Arc<Shared>,
}

impl TokenService {
    /// Starts a service listening on `bind_host` (127.0.0.1, or 127.0.0.2
    /// for a realm on another host), with its key in `dir`.
    pub fn start(bind_host: &str, dir: &Path) -> TokenService {
        require("openssl", "openssl");
        let run = |args: &[&str]| super::openssl(dir, args);
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=occy-test-token-signer",
            "-days",
            "2",
            "-keyout",
            "token.key",
            "-out",
            "token.crt",
        ]);
        run(&["x509", "-in", "token.crt", "-outform", "DER", "-out", "token.der"]);
        let der = std::fs::read(dir.join("token.der")).unwrap();
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            cert_b64: base64::engine::general_purpose::STANDARD.encode(der),
            policy: Mutex::new(TokenPolicy::default()),
            log: Mutex::new(Vec::new()),
            refresh_tokens: Mutex::new(Vec::new()),
            serial: AtomicU64::new(0),
        });
        let listener = TcpListener::bind(format!("{bind_host}:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(&s, conn));
            }
        });
        TokenService {
            realm: format!("http://{addr}/token"),
            shared,
        }
    }

    /// The certificate the registry trusts (its `rootcertbundle`).
    pub fn cert_path(&self) -> PathBuf {
        self.shared.dir.join("token.crt")
    }

    /// Changes what the service grants from now on.
    pub fn set_policy(&self, policy: TokenPolicy) {
        *self.shared.policy.lock().unwrap() = policy;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.shared.log.lock().unwrap().clone()
    }

    /// The requests so far that asked for a scope naming `repo`.
    pub fn requests_for(&self, repo: &str) -> Vec<TokenRequest> {
        let needle = format!(":{repo}:");
        self.requests()
            .into_iter()
            .filter(|r| r.scopes.iter().any(|s| s.contains(&needle)))
            .collect()
    }
}

/// What `account` (None: anonymous) may do: `(type, name pattern, actions)`.
pub fn grants(account: Option<&str>) -> Vec<(&'static str, &'static str, &'static [&'static str])> {
    match account {
        Some(ADMIN) => vec![
            ("repository", "*", &["pull", "push", "delete"]),
            ("registry", "catalog", &["*"]),
        ],
        Some(ALICE) => vec![
            ("repository", "src/*", &["pull"]),
            ("repository", "mirror/*", &["pull", "push"]),
            ("repository", "public/*", &["pull"]),
        ],
        Some(BOB) => vec![
            ("repository", "src/*", &["pull"]),
            ("repository", "mirror/*", &["pull"]),
            ("repository", "public/*", &["pull"]),
        ],
        _ => vec![("repository", "public/*", &["pull"])],
    }
}

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// `TYPE:NAME:ACTIONS` split (NAME may hold colons).
fn split_scope(scope: &str) -> Option<(&str, &str, Vec<&str>)> {
    let (typ, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    Some((typ, name, actions.split(',').filter(|a| !a.is_empty()).collect()))
}

/// The access entries granted to `account` for `scopes` under `policy`.
fn decide(account: Option<&str>, scopes: &[String], policy: &TokenPolicy) -> Vec<Value> {
    let rules = grants(account);
    let wants_push = scopes
        .iter()
        .filter_map(|s| split_scope(s))
        .any(|(_, _, actions)| actions.contains(&"push"));
    let mut access = Vec::new();
    for scope in scopes {
        let Some((typ, name, actions)) = split_scope(scope) else {
            continue;
        };
        let mut ok: Vec<&str> = Vec::new();
        for action in actions {
            let allowed = rules
                .iter()
                .any(|(t, p, acts)| *t == typ && matches(p, name) && (acts.contains(&action) || acts.contains(&"*")));
            let refused = policy.refused.iter().any(|r| {
                split_scope(r).is_some_and(|(t, p, acts)| t == typ && matches(p, name) && acts.contains(&action))
            });
            let no_mount = typ == "repository"
                && action == "pull"
                && !scope.contains("push")
                && wants_push
                && policy.no_mount_from.iter().any(|p| matches(p, name));
            if allowed && !refused && !no_mount && !ok.contains(&action) {
                ok.push(action);
            }
        }
        if !ok.is_empty() {
            access.push(json!({"type": typ, "name": name, "actions": ok}));
        }
    }
    access
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A signed JWT for `account` with `access`, accepted by the registry for `life` seconds.
fn jwt(s: &Shared, account: Option<&str>, access: &[Value], life: i64) -> String {
    let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [s.cert_b64]});
    let t = now();
    let claims = json!({
        "iss": ISSUER,
        "sub": account.unwrap_or(""),
        "aud": SERVICE,
        "exp": t + life - REGISTRY_LEEWAY_SECS,
        "nbf": t - 1,
        "iat": t,
        "jti": format!("occy-test-{}", s.serial.fetch_add(1, Ordering::SeqCst)),
        "access": access,
    });
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(s.dir.join("token.key"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl dgst: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{input}.{}", b64url(&out.stdout))
}

/// The account named by `user:password`, if the password is right.
fn check_password(user: &str, password: &str) -> Option<String> {
    let ok = matches!(
        (user, password),
        (ALICE, ALICE_PASS) | (BOB, BOB_PASS) | (ADMIN, ADMIN_PASS)
    );
    ok.then(|| user.to_string())
}

fn form_pairs(s: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(s.as_bytes()).into_owned().collect()
}

fn serve(s: &Shared, stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut authorization = None;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            if k == "authorization" {
                authorization = Some(v);
            } else if k == "content-length" {
                length = v.parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    let _ = reader.read_exact(&mut body);
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let query = target.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default();

    let mut entry = TokenRequest {
        method: method.clone(),
        grant_type: String::new(),
        authorization: authorization.is_some(),
        account: None,
        scopes: Vec::new(),
        granted: Vec::new(),
        status: 200,
        token: None,
    };
    let policy = s.policy.lock().unwrap().clone();
    let refresh_wanted;
    let account: Result<Option<String>, ()> = if method == "POST" {
        let form = form_pairs(&String::from_utf8_lossy(&body));
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        entry.grant_type = get("grant_type").unwrap_or_default();
        entry.scopes = get("scope")
            .map(|v| v.split(' ').filter(|x| !x.is_empty()).map(String::from).collect())
            .unwrap_or_default();
        refresh_wanted = get("access_type").as_deref() == Some("offline");
        match entry.grant_type.as_str() {
            "password" => match (get("username"), get("password")) {
                (Some(u), Some(p)) => check_password(&u, &p).map(Some).ok_or(()),
                _ => Err(()),
            },
            "refresh_token" => {
                let rt = get("refresh_token").unwrap_or_default();
                let known = s.refresh_tokens.lock().unwrap();
                known
                    .iter()
                    .find(|(t, _)| *t == rt)
                    .map(|(_, a)| Some(a.clone()))
                    .ok_or(())
            }
            _ => Err(()),
        }
    } else {
        let q = form_pairs(&query);
        entry.scopes = q.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.clone()).collect();
        refresh_wanted = q.iter().any(|(k, v)| k == "offline_token" && v == "true");
        match authorization.as_deref() {
            None => Ok(None),
            Some(h) => h
                .strip_prefix("Basic ")
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
                .and_then(|raw| String::from_utf8(raw).ok())
                .and_then(|up| up.split_once(':').and_then(|(u, p)| check_password(u, p)))
                .map(Some)
                .ok_or(()),
        }
    };
    let (status, answer) = match account {
        Err(()) => (
            401,
            json!({"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}),
        ),
        Ok(account) => {
            let access = decide(account.as_deref(), &entry.scopes, &policy);
            for a in &access {
                for act in a["actions"].as_array().unwrap() {
                    entry.granted.push(format!(
                        "{}:{}:{}",
                        a["type"].as_str().unwrap(),
                        a["name"].as_str().unwrap(),
                        act.as_str().unwrap()
                    ));
                }
            }
            let token = jwt(s, account.as_deref(), &access, policy.life_secs);
            entry.token = Some(token.clone());
            let expires_in = policy.announced_expires_in.unwrap_or(policy.life_secs);
            let mut answer = json!({
                "token": token,
                "access_token": token,
                "expires_in": expires_in,
                "issued_at": httpdate::fmt_http_date(SystemTime::now()),
            });
            if refresh_wanted {
                if let Some(a) = &account {
                    let rt = format!("refresh-{}-{}", a, s.serial.fetch_add(1, Ordering::SeqCst));
                    s.refresh_tokens.lock().unwrap().push((rt.clone(), a.clone()));
                    answer["refresh_token"] = json!(rt);
                }
            }
            entry.account = account;
            (200, answer)
        }
    };
    entry.status = status;
    s.log.lock().unwrap().push(entry);
    let body = answer.to_string();
    let reason = if status == 200 { "OK" } else { "Unauthorized" };
    let mut out = stream;
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// The real Distribution registry with `auth: token`, its access log, and
/// its token service.
pub struct TokenRegistry {
    pub reg: Registry,
    pub tokens: TokenService,
}

impl TokenRegistry {
    /// A registry whose token service listens on `realm_host`.
    pub fn start(realm_host: &str) -> TokenRegistry {
        let dir = scratch_dir("token-service");
        let tokens = TokenService::start(realm_host, &dir);
        let auth = format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            tokens.realm,
            tokens.cert_path().display()
        );
        let reg = Registry::launch_token(&auth);
        if let Some(child) = &reg.child {
            reap_after_exit(&dir, Some(child.id()));
        }
        TokenRegistry { reg, tokens }
    }

    /// The token registry shared by the tests that need no policy of their own.
    pub fn shared() -> &'static TokenRegistry {
        static REG: std::sync::OnceLock<TokenRegistry> = std::sync::OnceLock::new();
        REG.get_or_init(|| TokenRegistry::start("127.0.0.1"))
    }

    /// `registry://HOST/repo`.
    pub fn url(&self, repo: &str) -> String {
        self.reg.url(repo)
    }

    pub fn host(&self) -> &str {
        &self.reg.host
    }

    /// occy's flags for this registry as `user` (None: anonymous).
    pub fn flags(&self, user: Option<(&str, &str)>) -> Vec<String> {
        let mut f = vec!["--insecure-registry".to_string(), self.reg.host.clone()];
        if let Some((u, p)) = user {
            f.extend([
                "--username".to_string(),
                u.to_string(),
                "--password".to_string(),
                p.to_string(),
            ]);
        }
        f
    }

    /// The access log lines of requests naming `repo`.
    pub fn log_of(&self, repo: &str) -> Vec<String> {
        let needle = format!("/v2/{repo}/");
        self.reg
            .access_log()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(String::from)
            .collect()
    }
}
