//! Bearer tokens as registries use them in the wild, against the real
//! Distribution registry in `auth: token` mode and a token service that
//! follows Distribution's token spec (support/token_service.rs): pull-only
//! and push accounts, same-registry mounts that need the source scope in
//! the push token (and the upload when it is refused), a token that expires
//! mid-run, anonymous pulls, refused scopes named in errors, credentials
//! kept from a realm on another host, and `-vv` logs without secrets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use crate::support::token_service::*;
use crate::support::*;

const IMAGES: [&str; 4] = ["base", "app-a", "app-b", "multiarch"];

/// Pushes every standard image as `PREFIX/NAME:1.0` for each prefix, as admin.
fn seed(reg: &TokenRegistry, prefixes: &[&str], extra: &[&str]) {
    let mut flags = reg.flags(Some((ADMIN, ADMIN_PASS)));
    flags.extend(extra.iter().map(|s| s.to_string()));
    for prefix in prefixes {
        for name in IMAGES {
            let args = [
                "process",
                "--all-platforms",
                &standard_ref(name),
                &reg.url(&format!("{prefix}/{name}:1.0")),
            ];
            assert_ok(&args, occy_with(&flags, &args));
        }
    }
}

/// The token registry most tests share: images under `src/`, `public/` and
/// `src/nomount/`, whose pull is left out of any token that also carries a
/// push scope (a registry forbidding mounts from them); nobody may push to
/// `mirror/locked-*`.
fn shared() -> &'static TokenRegistry {
    static DONE: OnceLock<()> = OnceLock::new();
    let reg = TokenRegistry::shared();
    DONE.get_or_init(|| {
        reg.tokens.set_policy(TokenPolicy {
            no_mount_from: vec!["src/nomount/*".into()],
            refused: vec!["repository:mirror/locked-*:push".into()],
            ..Default::default()
        });
        seed(reg, &["src", "public", "src/nomount"], &[]);
    });
    reg
}

/// Runs occy as `user` without the cache: these tests count what each run
/// uploads and mounts on a registry other tests write too, which blob
/// locations remembered from their runs would change.
fn as_user(reg: &TokenRegistry, user: Option<(&str, &str)>, args: &[&str]) -> std::process::Output {
    let mut flags = reg.flags(user);
    flags.push("--no-cache".into());
    occy_with(&flags, args)
}

fn alice(reg: &TokenRegistry, args: &[&str]) -> std::process::Output {
    as_user(reg, Some((ALICE, ALICE_PASS)), args)
}

/// The distinct blobs (layers and configs) of a generated image, every platform.
fn blobs_of(name: &str) -> BTreeSet<String> {
    let g = generated(name);
    g.images
        .iter()
        .flat_map(|i| {
            i.layers
                .iter()
                .map(|l| l.digest.to_string())
                .chain(std::iter::once(i.config.digest.to_string()))
        })
        .collect()
}

/// The distinct layers of a generated image, every platform.
fn layers_of(name: &str) -> usize {
    let g = generated(name);
    g.images
        .iter()
        .flat_map(|i| i.layers.iter().map(|l| l.digest.to_string()))
        .collect::<BTreeSet<_>>()
        .len()
}

/// Access-log lines of `repo` with `method` and `status` whose request contains `needle`.
fn count(log: &[String], method: &str, needle: &str, status: u16) -> usize {
    log.iter()
        .filter(|l| {
            l.contains(&format!("\"{method} "))
                && l.contains(needle)
                && l.split('"')
                    .nth(2)
                    .is_some_and(|s| s.trim().starts_with(&status.to_string()))
        })
        .count()
}

/// The `digest=` of each blob upload the registry completed (201), with how often.
fn completed_uploads(log: &[String]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for l in log {
        let request = l.split('"').nth(1).unwrap_or("");
        let status_ok = l.split('"').nth(2).is_some_and(|s| s.trim().starts_with("201"));
        if request.starts_with("PUT ") && request.contains("/blobs/uploads/") && status_ok {
            if let Some(d) = request.split("digest=").nth(1) {
                let d = d.split([' ', '&']).next().unwrap().replace("%3A", ":");
                *out.entry(d).or_default() += 1;
            }
        }
    }
    out
}

#[test]
fn a_pull_only_account_reads_and_is_told_which_scope_a_push_lacks() {
    let reg = shared();
    let out_dir = scratch_dir("tokens-bob");
    let layout = format!("oci://{}:app-a", out_dir.join("layout").display());
    let args = ["process", &reg.url("src/app-a:1.0"), &layout];
    assert_ok(&args, as_user(reg, Some((BOB, BOB_PASS)), &args));
    assert_eq!(layout_tags(&out_dir.join("layout")), ["app-a"]);
    let bobs: Vec<_> = reg
        .tokens
        .requests_for("src/app-a")
        .into_iter()
        .filter(|r| r.account.as_deref() == Some(BOB))
        .collect();
    assert!(!bobs.is_empty(), "bob asked for no token");
    assert!(
        bobs.iter().all(|r| r.scopes == ["repository:src/app-a:pull"]),
        "{bobs:?}"
    );

    // bob may read mirror/* but not write it: the error names the scope.
    let args = ["process", &standard_ref("base"), &reg.url("mirror/bob-base:1.0")];
    let err = assert_fails(
        &args,
        as_user(reg, Some((BOB, BOB_PASS)), &args),
        1,
        "bob may not push to",
    );
    assert!(
        err.contains(&format!(
            "bob may not push to {}/mirror/bob-base (the token service granted repository:mirror/bob-base:pull only)",
            reg.host()
        )),
        "{err}"
    );
    assert!(
        !err.contains("--password") && !err.contains("credentials"),
        "blames the password: {err}"
    );
    // Said once (a warning when it happens, then the target's error): the
    // refusal fails the target at once, its other blobs are not tried one
    // after the other (4 warnings before).
    assert_eq!(err.matches("may not push").count(), 2, "{err}");
    assert_eq!(err.matches("WARN").count(), 1, "{err}");
    // Nothing was written.
    assert_eq!(completed_uploads(&reg.log_of("mirror/bob-base")).len(), 0);

    // alice may write there.
    let args = [
        "-O",
        "json",
        "process",
        &standard_ref("base"),
        &reg.url("mirror/alice-base:1.0"),
    ];
    let r = json_of(&assert_ok(&args, alice(reg, &args)));
    assert_eq!(r["layers_copied"], 1, "{r}");
    let uploads = completed_uploads(&reg.log_of("mirror/alice-base"));
    assert_eq!(uploads.keys().cloned().collect::<BTreeSet<_>>(), blobs_of("base"));
}

#[test]
fn same_registry_mounts_carry_the_source_scope() {
    let reg = shared();
    let args = [
        "-O",
        "json",
        "process",
        "--all-platforms",
        &reg.url("src/multiarch:1.0"),
        &reg.url("mirror/mounted-multi:1.0"),
    ];
    let r = json_of(&assert_ok(&args, alice(reg, &args)));
    let blobs = blobs_of("multiarch");
    let layers = layers_of("multiarch");
    assert_eq!(r["layers_mounted"], layers as u64, "{r}");
    assert_eq!(r["layers_copied"], 0, "{r}");
    let log = reg.log_of("mirror/mounted-multi");
    // Every blob (layers and configs) mounted from the source repository, none uploaded.
    assert_eq!(
        count(&log, "POST", "from=src%2Fmultiarch", 201),
        blobs.len(),
        "{log:#?}"
    );
    assert!(completed_uploads(&log).is_empty(), "{log:#?}");
    // The token asked for carried both scopes, and got both.
    let both: Vec<_> = reg
        .tokens
        .requests_for("mirror/mounted-multi")
        .into_iter()
        .filter(|t| t.scopes.iter().any(|s| s == "repository:src/multiarch:pull"))
        .collect();
    assert!(!both.is_empty(), "no token asked for the source scope");
    for t in &both {
        assert!(
            t.scopes
                .contains(&"repository:mirror/mounted-multi:pull,push".to_string()),
            "{t:?}"
        );
        assert!(
            t.granted.contains(&"repository:src/multiarch:pull".to_string()),
            "{t:?}"
        );
    }
    eprintln!(
        "mounts: {} blobs mounted (201), {layers} layers in the report, 0 uploads, {} token(s) with both scopes",
        blobs.len(),
        both.len()
    );
}

#[test]
fn a_refused_source_scope_turns_mounts_into_uploads() {
    let reg = shared();
    let args = [
        "-O",
        "json",
        "process",
        "--all-platforms",
        &reg.url("src/nomount/multiarch:1.0"),
        &reg.url("mirror/nomount-multi:1.0"),
    ];
    let r = json_of(&assert_ok(&args, alice(reg, &args)));
    let blobs = blobs_of("multiarch");
    let layers = layers_of("multiarch");
    assert_eq!(r["layers_mounted"], 0, "{r}");
    assert_eq!(r["layers_copied"], layers as u64, "{r}");
    let log = reg.log_of("mirror/nomount-multi");
    // Each mount was tried, refused (401), and the blob uploaded once.
    assert!(
        count(&log, "POST", "from=src%2Fnomount%2Fmultiarch", 401) >= 1,
        "{log:#?}"
    );
    assert_eq!(
        count(&log, "POST", "from=src%2Fnomount%2Fmultiarch", 201),
        0,
        "{log:#?}"
    );
    let uploads = completed_uploads(&log);
    assert_eq!(uploads.keys().cloned().collect::<BTreeSet<_>>(), blobs, "{log:#?}");
    assert!(uploads.values().all(|&n| n == 1), "{uploads:?}");
    eprintln!(
        "refused source scope: {} mounts answered 401, {} blobs uploaded once each, {layers} layers copied",
        count(&log, "POST", "from=src%2Fnomount%2Fmultiarch", 401),
        uploads.len()
    );
    let asked: Vec<_> = reg
        .tokens
        .requests_for("src/nomount/multiarch")
        .into_iter()
        .filter(|t| t.scopes.iter().any(|s| s.contains("mirror/nomount-multi")))
        .collect();
    assert!(!asked.is_empty());
    assert!(
        asked
            .iter()
            .all(|t| !t.granted.iter().any(|g| g.contains("src/nomount"))),
        "{asked:?}"
    );
    // And the image is whole.
    let check = ["check", &reg.url("mirror/nomount-multi:1.0")];
    assert_ok(&check, alice(reg, &check));
}

#[test]
fn anonymous_pulls_get_an_anonymous_token() {
    let reg = shared();
    let out_dir = scratch_dir("tokens-anon");
    let layout = format!("oci://{}:app-b", out_dir.join("layout").display());
    let before = reg.tokens.requests().len();
    let args = ["process", &reg.url("public/app-b:1.0"), &layout];
    assert_ok(&args, as_user(reg, None, &args));
    let asked: Vec<_> = reg.tokens.requests()[before..]
        .iter()
        .filter(|t| t.scopes.iter().any(|s| s.contains(":public/app-b:")))
        .cloned()
        .collect();
    assert!(!asked.is_empty(), "no token asked for");
    for t in &asked {
        assert!(!t.authorization, "credentials sent for an anonymous pull: {t:?}");
        assert_eq!(t.account, None);
        assert_eq!(t.granted, ["repository:public/app-b:pull"]);
    }
    // Anonymous access may not read src/ nor write: said so, with the fix.
    let args = ["process", &reg.url("src/app-b:1.0"), &layout];
    let err = assert_fails(&args, as_user(reg, None, &args), 1, "anonymous access may not pull");
    assert!(err.contains("give --username/--password"), "{err}");
}

#[test]
fn a_refused_catalog_scope_names_it_and_suggests_listing_repositories() {
    let reg = shared();
    let args = ["info", &reg.url("src/*:1.0")];
    let err = assert_fails(&args, alice(reg, &args), 1, "alice may not list the catalog");
    assert!(
        err.contains(&format!(
            "alice may not list the catalog of {} (the token service did not grant registry:catalog:*): name the repositories in the sync file instead of a glob",
            reg.host()
        )),
        "{err}"
    );
    assert!(!err.contains("--password"), "{err}");
}

/// Pushes every platform of `multiarch` as alice to `mirror/REPO:1.0` on a
/// registry of its own whose tokens follow `policy`, slowly (3 requests a
/// second) so the run outlasts a token. Returns the registry, the run's
/// report and how long it took.
fn slow_push(policy: TokenPolicy, repo: &str) -> (TokenRegistry, serde_json::Value, std::time::Duration) {
    let reg = TokenRegistry::start("127.0.0.1");
    reg.tokens.set_policy(policy);
    let dst = reg.url(&format!("mirror/{repo}:1.0"));
    let args = [
        "-O",
        "json",
        "--rate-limit",
        "3",
        "process",
        "--all-platforms",
        &standard_ref("multiarch"),
        &dst,
    ];
    let started = std::time::Instant::now();
    let r = json_of(&assert_ok(&args, alice(&reg, &args)));
    let took = started.elapsed();
    let log = reg.log_of(&format!("mirror/{repo}"));
    // Every blob stored exactly once, the image whole.
    let uploads = completed_uploads(&log);
    assert_eq!(
        uploads.keys().cloned().collect::<BTreeSet<_>>(),
        blobs_of("multiarch"),
        "{log:#?}"
    );
    assert!(
        uploads.values().all(|&n| n == 1),
        "a blob was uploaded twice: {uploads:?}"
    );
    assert_eq!(
        r["layers_copied"].as_u64().unwrap() as usize,
        layers_of("multiarch"),
        "{r}"
    );
    (reg, r, took)
}

/// The 401 answers of an access log after the first (the challenge a
/// client meets before it has any token): tokens the registry refused.
fn refused_tokens(log: &[String]) -> Vec<(usize, String)> {
    log.iter()
        .enumerate()
        .filter(|(_, l)| l.split('"').nth(2).is_some_and(|s| s.trim().starts_with("401")))
        .skip(1)
        .map(|(i, l)| (i, l.split('"').nth(1).unwrap_or("").to_string()))
        .collect()
}

/// The token requests for exactly `scope`.
fn token_requests(reg: &TokenRegistry, scope: &str) -> usize {
    reg.tokens.requests().iter().filter(|t| t.scopes == [scope]).count()
}

#[test]
fn a_token_that_expires_mid_run_is_renewed_and_the_request_sent_again() {
    // The registry accepts each token for 2 s, though the service says 300:
    // occy keeps using a token the registry then refuses as expired.
    let policy = TokenPolicy {
        life_secs: 2,
        announced_expires_in: Some(300),
        ..Default::default()
    };
    let (reg, _, took) = slow_push(policy, "expiring");
    assert!(took.as_secs_f64() > 4.0, "the run should outlast a token: {took:?}");
    let log = reg.log_of("mirror/expiring");
    let refused = refused_tokens(&log);
    assert!(!refused.is_empty(), "no token expired during the run: {log:#?}");
    // Each refused request came again (a blob upload: from a new session) and succeeded.
    for (pos, request) in &refused {
        let upload = request.starts_with("PUT ") && request.contains("/blobs/uploads/");
        assert!(
            log[pos + 1..].iter().any(|l| {
                let req = l.split('"').nth(1).unwrap_or("");
                let again = req == request || (upload && req.starts_with("POST ") && req.contains("/blobs/uploads/"));
                again && l.split('"').nth(2).is_some_and(|s| s.trim().starts_with('2'))
            }),
            "{request} was not sent again: {log:#?}"
        );
    }
    let push = token_requests(&reg, "repository:mirror/expiring:pull,push");
    assert!(push >= 2, "the push token was never renewed: {push} requests");
    eprintln!(
        "expiry on 401: {:.1} s, {} requests refused as expired ({:?}), {push} push tokens",
        took.as_secs_f64(),
        refused.len(),
        refused
            .iter()
            .map(|(_, r)| r.split(' ').next().unwrap_or(""))
            .collect::<Vec<_>>(),
    );
}

#[test]
fn a_token_is_renewed_before_it_expires_when_its_lifetime_is_known() {
    // Tokens live 4 s and the service says so: occy renews each before the
    // registry would refuse it, so no request meets an expired token.
    let policy = TokenPolicy {
        life_secs: 4,
        ..Default::default()
    };
    let (reg, _, took) = slow_push(policy, "renewed");
    assert!(took.as_secs_f64() > 5.0, "the run should outlast a token: {took:?}");
    let log = reg.log_of("mirror/renewed");
    let refused = refused_tokens(&log);
    assert!(refused.is_empty(), "requests met an expired token: {refused:?}");
    // A token was fetched again for a scope it had already been fetched for.
    let pull = token_requests(&reg, "repository:mirror/renewed:pull");
    let push = token_requests(&reg, "repository:mirror/renewed:pull,push");
    assert!(
        pull.max(push) >= 2,
        "no token was renewed: {pull} pull, {push} push tokens"
    );
    eprintln!(
        "expiry ahead: {:.1} s, {pull} pull and {push} push tokens, no 401 after the challenge",
        took.as_secs_f64()
    );
}

#[test]
fn credentials_never_reach_a_realm_on_another_host() {
    let reg = TokenRegistry::start("127.0.0.2");
    seed(&reg, &["public"], &["--token-realm", "127.0.0.2"]);
    let admin_token_requests = reg.tokens.requests().len();
    assert!(admin_token_requests > 0);
    // alice pulls a public image: the realm on 127.0.0.2 gets no credentials.
    let out_dir = scratch_dir("tokens-realm");
    let layout = format!("oci://{}:base", out_dir.join("layout").display());
    let args = ["process", &reg.url("public/base:1.0"), &layout];
    assert_ok(&args, alice(&reg, &args));
    // And a push, which needs them, fails saying why.
    let args = ["process", &standard_ref("base"), &reg.url("mirror/realm-base:1.0")];
    let err = assert_fails(&args, alice(&reg, &args), 1, "anonymous access may not push to");
    assert!(err.contains("--token-realm 127.0.0.2"), "{err}");
    let since: Vec<_> = reg.tokens.requests()[admin_token_requests..].to_vec();
    assert!(!since.is_empty());
    assert!(
        since.iter().all(|t| !t.authorization),
        "credentials reached the realm on another host: {since:?}"
    );
    // Listed, the realm gets them and the push goes through.
    let args = [
        "--token-realm",
        "127.0.0.2",
        "process",
        &standard_ref("base"),
        &reg.url("mirror/realm-base:1.0"),
    ];
    assert_ok(&args, alice(&reg, &args));
    assert!(reg
        .tokens
        .requests()
        .iter()
        .any(|t| t.account.as_deref() == Some(ALICE)));
}

#[test]
fn verbose_logs_show_no_token_password_or_authorization() {
    let reg = shared();
    let args = [
        "-vv",
        "process",
        "--all-platforms",
        &reg.url("src/app-a:1.0"),
        &reg.url("mirror/vv-app-a:1.0"),
    ];
    let out = assert_ok(&args, alice(reg, &args));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stderr.lines().count() > 20, "-vv logged little: {stderr}");
    let tokens: Vec<String> = reg
        .tokens
        .requests_for("mirror/vv-app-a")
        .into_iter()
        .filter_map(|t| t.token)
        .collect();
    assert!(!tokens.is_empty());
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{ALICE}:{ALICE_PASS}"));
    for text in [&stderr, &stdout] {
        for secret in tokens.iter().chain([&ALICE_PASS.to_string(), &basic]) {
            // The signature part alone is enough to recognise a token.
            let tail = secret.rsplit('.').next().unwrap();
            assert!(!text.contains(tail), "a secret appears in the -vv output");
        }
        assert!(
            !text.to_ascii_lowercase().contains("authorization:"),
            "an Authorization header is logged"
        );
        assert!(!text.contains("Bearer ey"), "a bearer token is logged");
    }
}

/// POSTs an OAuth2 form to the token service; returns its JSON answer.
fn post_token_form(realm: &str, form: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let rest = realm.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap()
}

#[test]
fn an_identity_token_is_exchanged_with_the_oauth2_form() {
    let reg = shared();
    // What `docker login` stores for such registries: a refresh token got
    // with the password once (grant_type=password, access_type=offline).
    let answer = post_token_form(
        &reg.tokens.realm,
        &format!(
            "grant_type=password&username={ALICE}&password={ALICE_PASS}&service={SERVICE}&client_id=test&access_type=offline"
        ),
    );
    let refresh = answer["refresh_token"].as_str().expect("a refresh token").to_string();
    let dir = scratch_dir("tokens-idt");
    let authfile = dir.join("auth.json");
    std::fs::write(
        &authfile,
        serde_json::json!({"auths": {reg.host(): {"identitytoken": refresh}}}).to_string(),
    )
    .unwrap();
    let args = [
        "-O",
        "json",
        "--authfile",
        authfile.to_str().unwrap(),
        "process",
        &reg.url("src/app-b:1.0"),
        &reg.url("mirror/idt-app-b:1.0"),
    ];
    let r = json_of(&assert_ok(&args, as_user(reg, None, &args)));
    assert_eq!(r["layers_mounted"], layers_of("app-b") as u64, "{r}");
    let exchanged: Vec<_> = reg
        .tokens
        .requests_for("mirror/idt-app-b")
        .into_iter()
        .filter(|t| t.method == "POST")
        .collect();
    assert!(!exchanged.is_empty(), "no OAuth2 POST for the push");
    for t in &exchanged {
        assert_eq!(t.grant_type, "refresh_token", "{t:?}");
        assert_eq!(t.account.as_deref(), Some(ALICE), "{t:?}");
    }
}

#[test]
fn a_scope_refused_for_one_repository_fails_that_target_only() {
    let reg = shared();
    let dir = scratch_dir("tokens-locked");
    let file = dir.join("mirror.yaml");
    std::fs::write(
        &file,
        format!(
            "version: 1\nsync:\n  - from: {}\n    to:\n      - {}\n      - {}\n",
            reg.url("src/app-a:1.0"),
            reg.url("mirror/locked-app-a:1.0"),
            reg.url("mirror/open-app-a:1.0"),
        ),
    )
    .unwrap();
    let args = ["-O", "json", "sync", file.to_str().unwrap()];
    let out = alice(reg, &args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "alice may not push to {}/mirror/locked-app-a (the token service granted repository:mirror/locked-app-a:pull only)",
            reg.host()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("--password"), "{stderr}");
    let r = json_of(&out);
    assert_eq!(r["failed"], 1, "{r}");
    assert_eq!(r["written"], 1, "{r}");
    // The open repository got the image (mounted), the locked one nothing.
    assert_eq!(count(&reg.log_of("mirror/open-app-a"), "PUT", "/manifests/1.0", 201), 1);
    assert_eq!(count(&reg.log_of("mirror/locked-app-a"), "PUT", "/manifests/", 201), 0);
    assert!(completed_uploads(&reg.log_of("mirror/locked-app-a")).is_empty());
}
