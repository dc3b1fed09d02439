//! Provenance as it is signed today (issue 34): keyless sigstore bundles
//! (cosign v3's OCI 1.1 referrers) and keyless cosign `.sig` tags verified
//! offline from a `trusted_root.json`, and Notation JWS signatures under a
//! strict trust policy — all made by support/sigstore_material.py per the
//! specs, carried by the real Distribution registry (referrers tag, and the
//! referrers API through the proxy), with sigstore-python as the independent
//! judge of every bundle. A failed verification fails its target by name
//! (exit 1) while the others sync; a verified mirror (registry and OCI
//! layout) verifies again with the same trust root, its signatures
//! byte-for-byte the source's.

use std::path::Path;

use crate::support::referrers_proxy::ReferrersProxy;
use crate::support::sigstore::{self as ss, Listing, ALICE, ISSUER};
use crate::support::*;
use occy::image::Descriptor;

fn text_of(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write_spec(dir: &Path, body: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("sync.yaml");
    std::fs::write(&path, format!("version: 1\n{body}")).unwrap();
    path.display().to_string()
}

/// Pushes standard image `app-a` to `repo:1.0`; its descriptor.
fn push_image(reg: &Registry, repo: &str) -> Descriptor {
    reg.push_layout(&standard_images().0, "app-a", &format!("{repo}:1.0"));
    ss::image(reg, repo, "1.0")
}

fn keyless_verify(m: &ss::Material) -> String {
    format!(
        "{{keyless: {{issuer: \"{ISSUER}\", identity: {ALICE}, trusted_root: {}}}}}",
        m.trusted_root().display()
    )
}

/// A keyless case: repository, bundle options, the digest signed (None:
/// the image's), whether it is accepted, and the reason occy must name.
type Case<'a> = (&'a str, Vec<&'a str>, Option<&'a str>, bool, &'a str);

/// Each keyless case on its own repository, its bundle listed in the
/// referrers tag: alice's passes (bundle v0.3, v0.2, v0.1); mallory's,
/// another issuer's, a rogue CA's, one whose log proof was removed after
/// the certificate expired, one signing another digest and a tampered one
/// each fail with the reason named, exit 1, the good ones synced — and
/// sigstore-python agrees on every bundle.
#[test]
fn keyless_bundles_pass_and_each_failure_is_named() {
    let Some(m) = ss::material() else { return };
    let reg = Registry::shared(Mode::Plain);
    let dir = scratch_dir("keyless-cases");
    let other = format!("sha256:{}", "ab".repeat(32));
    // (repository, bundle options, digest signed: None = the image's,
    //  accepted, the reason occy must name)
    let cases: Vec<Case> = vec![
        ("alice", vec![], None, true, ""),
        ("alice-v02", vec!["--version", "0.2"], None, true, ""),
        ("alice-v01", vec!["--version", "0.1"], None, true, ""),
        ("mallory", vec!["--identity", "mallory@example.test"], None, false, "wrong identity: the certificate names mallory@example.test, not alice@example.test"),
        ("issuer", vec!["--issuer", "https://other-issuer.example.test"], None, false, "wrong issuer: the certificate was issued for OIDC issuer https://other-issuer.example.test, not https://issuer.example.test"),
        ("rogue", vec!["--ca", "rogue"], None, false, "untrusted root: the certificate (alice@example.test) was not issued by a certificate authority of"),
        ("expired", vec!["--no-tlog"], None, false, "expired certificate without log proof"),
        ("elsewhere", vec![], Some(other.as_str()), false, "signature for another digest: the statement signs sha256:abab"),
        ("tampered", vec!["--tamper"], None, false, "tampered payload"),
    ];
    let mut entries = String::new();
    let layout = dir.join("layout");
    for (name, opts, signs, accepted, _) in &cases {
        let repo = format!("keyless-{name}/app");
        let subject = push_image(reg, &repo);
        let digest = subject.digest.to_string();
        let bundle = m.bundle(name, signs.unwrap_or(&digest), opts);
        // The independent verifier agrees.
        let (ok, said) = m.sigstore_python(&bundle, &digest, ALICE);
        assert_eq!(ok, *accepted, "sigstore-python on {name}: {said}");
        ss::push_bundle(
            reg,
            &reg.host,
            &repo,
            &subject,
            &std::fs::read(&bundle).unwrap(),
            Listing::Tag,
        );
        entries.push_str(&format!(
            "  - from: registry://{}/{repo}:1.0\n    to: oci://{}:{name}\n",
            reg.host,
            layout.display()
        ));
    }
    let spec = write_spec(
        &dir,
        &format!(
            "defaults:\n  verify: {}\nregistries:\n  \"{}\": {{insecure: true}}\nsync:\n{entries}",
            keyless_verify(m),
            reg.host
        ),
    );
    let plan = occy(&["sync", &spec, "--plan"]);
    let plan_text = text_of(&plan);
    assert!(
        plan_text.contains("signed by keyless alice@example.test (issuer https://issuer.example.test), logged "),
        "{plan_text}"
    );
    assert!(
        plan_text.contains("verify: requires a keyless signature by alice@example.test"),
        "{plan_text}"
    );
    // The Markdown plan (for a pull request) names the signer too.
    let md = text_of(&occy(&["-O", "markdown", "sync", &spec, "--plan"]));
    assert!(
        md.contains("<br>signed by keyless alice@example.test (issuer https://issuer.example.test)"),
        "{md}"
    );
    let out = occy(&["sync", &spec]);
    let text = text_of(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let index = std::fs::read_to_string(layout.join("index.json")).unwrap();
    for (name, _, _, accepted, reason) in &cases {
        let tagged = index.contains(&format!("\"{name}\""));
        assert_eq!(tagged, *accepted, "{name} in the layout: {index}\n{text}");
        if *accepted {
            let line = text
                .lines()
                .find(|l| l.contains(&format!(":{name} complete")))
                .unwrap_or_else(|| panic!("no line for {name}:\n{text}"));
            assert!(line.contains("signed by keyless alice@example.test"), "{line}");
            assert!(
                line.contains("proven by signed entry timestamp and inclusion proof"),
                "{line}"
            );
        } else {
            let line = text
                .lines()
                .find(|l| {
                    l.starts_with("error: ") && l.contains(&format!("/keyless-{name}/app:1.0 →")) && l.contains(reason)
                })
                .unwrap_or_else(|| panic!("{name}: no line naming {reason:?}:\n{text}"));
            assert!(line.contains("no accepted signature for sha256:"), "{line}");
        }
    }
    // The JSON report names the signer too.
    let json = occy(&["-O", "json", "sync", &spec]);
    let v: serde_json::Value =
        serde_json::from_slice(&json.stdout).unwrap_or_else(|e| panic!("{e}: {}", text_of(&json)));
    let signed: Vec<&str> = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["signed_by"].as_str())
        .collect();
    assert_eq!(signed.len(), 3, "{v}");
}

/// The same keyless bundle found through the referrers API (the proxy);
/// a keyless cosign `.sig` tag (certificate, chain and Rekor bundle
/// annotations) verifies too, and so does that signature in cosign's OCI
/// 1.1 referrer form; `occy info` shows who signed, when and how.
#[test]
fn keyless_by_the_referrers_api_and_by_a_sig_tag() {
    let Some(m) = ss::material() else { return };
    let reg = Registry::shared(Mode::Plain);
    let proxy = ReferrersProxy::start(&reg.host);
    let dir = scratch_dir("keyless-api");
    let subject = push_image(reg, "keyless-api/app");
    let digest = subject.digest.to_string();
    let bundle = m.bundle("api", &digest, &[]);
    let (ok, said) = m.sigstore_python(&bundle, &digest, ALICE);
    assert!(ok, "{said}");
    let pushed = ss::push_bundle(
        reg,
        &proxy.host,
        "keyless-api/app",
        &subject,
        &std::fs::read(&bundle).unwrap(),
        Listing::Api,
    );
    assert_eq!(proxy.listed("keyless-api/app", &digest), [pushed.digest.to_string()]);

    // A keyless .sig tag on another repository.
    let sig_subject = push_image(reg, "keyless-sig/app");
    let reference = format!("{}/keyless-sig/app", reg.host);
    let (payload, annotations) = m.keyless_sig("sig", sig_subject.digest.as_str(), &reference);
    ss::push_keyless_sig(reg, "keyless-sig/app", &sig_subject.digest, &payload, &annotations);

    // The same form as cosign's OCI 1.1 referrer.
    let ref_subject = push_image(reg, "keyless-sigref/app");
    let (payload, annotations) = m.keyless_sig(
        "sigref",
        ref_subject.digest.as_str(),
        &format!("{}/keyless-sigref/app", reg.host),
    );
    ss::push_cosign_referrer(reg, "keyless-sigref/app", &ref_subject, &payload, &annotations);

    let layout = dir.join("layout");
    let spec = write_spec(
        &dir,
        &format!(
            "defaults:\n  verify: {}\nregistries:\n  \"{p}\": {{insecure: true}}\n  \"{r}\": {{insecure: true}}\nsync:\n  - from: registry://{p}/keyless-api/app:1.0\n    to: oci://{l}:api\n  - from: registry://{r}/keyless-sig/app:1.0\n    to: oci://{l}:sig\n  - from: registry://{r}/keyless-sigref/app:1.0\n    to: oci://{l}:sigref\n",
            keyless_verify(m),
            p = proxy.host,
            r = reg.host,
            l = layout.display()
        ),
    );
    let out = occy(&["sync", &spec]);
    let text = text_of(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        proxy
            .requests()
            .iter()
            .any(|r| r == &format!("GET /v2/keyless-api/app/referrers/{digest}")),
        "{:?}",
        proxy.requests()
    );
    assert!(
        text.contains("sigstore bundle v0.3 proven by signed entry timestamp and inclusion proof"),
        "{text}"
    );
    for name in ["sig", "sigref"] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!(":{name} complete")))
            .unwrap_or_else(|| panic!("{name}: {text}"));
        assert!(
            line.contains("signed by keyless alice@example.test (issuer https://issuer.example.test), logged ")
                && line.contains("cosign .sig (keyless) proven by signed entry timestamp"),
            "{line}"
        );
    }

    // occy info: who, when, with what.
    let root = m.trusted_root().display().to_string();
    let args = [
        "info",
        &format!("registry://{}/keyless-api/app:1.0", proxy.host),
        "--trusted-root",
        &root,
        "--certificate-identity",
        ALICE,
        "--certificate-oidc-issuer",
        ISSUER,
    ];
    let info = assert_ok(
        &args,
        occy_with(&["--insecure-registry".into(), proxy.host.clone()], &args),
    );
    let info = String::from_utf8_lossy(&info.stdout).to_string();
    assert!(
        info.contains(&format!(
            "sigstore bundle {}:\n  verified: keyless alice@example.test (issuer https://issuer.example.test), logged ",
            pushed.digest
        )),
        "{info}"
    );
    // Another identity: why not.
    let args = [
        "info",
        &format!("registry://{}/keyless-sig/app:1.0", reg.host),
        "--trusted-root",
        &root,
        "--certificate-identity",
        "bob@example.test",
        "--certificate-oidc-issuer",
        ISSUER,
    ];
    let info = assert_ok(
        &args,
        occy_with(&["--insecure-registry".into(), reg.host.clone()], &args),
    );
    let info = String::from_utf8_lossy(&info.stdout).to_string();
    assert!(
        info.contains(
            "not verified: unusable: wrong identity: the certificate names alice@example.test, not bob@example.test"
        ),
        "{info}"
    );
}

/// Notation: a JWS signature by the trusted CA's signer passes under the
/// strict policy; one by a rogue CA of the same name and a tampered
/// envelope fail, named.
#[test]
fn notation_jws_passes_and_untrusted_or_tampered_fail() {
    let Some(m) = ss::material() else { return };
    let reg = Registry::shared(Mode::Plain);
    let dir = scratch_dir("notation");
    let cases: [(&str, Vec<&str>, &str); 4] = [
        ("good", vec![], ""),
        ("rogue", vec!["--ca", "rogue"], "untrusted signer: the certificate chain of C=US, O=Example Releases, CN=release-signer does not lead to a certificate of trust store ca:releases"),
        ("stranger", vec!["--cn", "someone-else"], "untrusted identity: the signer C=US, O=Example Releases, CN=someone-else is not a trusted identity of trust policy releases"),
        ("tampered", vec!["--tamper"], "tampered envelope: the JWS signature does not verify"),
    ];
    let layout = dir.join("layout");
    let mut entries = String::new();
    for (name, opts, _) in &cases {
        let repo = format!("notation-{name}/app");
        let subject = push_image(reg, &repo);
        let (env, thumbs) = m.notation(name, &subject, opts);
        ss::push_notation(reg, &repo, &subject, &env, &thumbs);
        entries.push_str(&format!(
            "  - from: registry://{}/{repo}:1.0\n    to: oci://{}:{name}\n",
            reg.host,
            layout.display()
        ));
    }
    let spec = write_spec(
        &dir,
        &format!(
            "defaults:\n  verify: {{notation: {{trust_store: {}, trust_policy: {}}}}}\nregistries:\n  \"{}\": {{insecure: true}}\nsync:\n{entries}",
            m.trust_store().display(),
            m.trust_policy().display(),
            reg.host
        ),
    );
    let out = occy(&["sync", &spec]);
    let text = text_of(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let good = text
        .lines()
        .find(|l| l.contains(":good complete"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        good.contains("signed by Notation C=US, O=Example Releases, CN=release-signer, signed "),
        "{good}"
    );
    for (name, _, reason) in cases.iter().skip(1) {
        assert!(
            text.lines().any(|l| l.starts_with("error: ")
                && l.contains(&format!("/notation-{name}/app:1.0 →"))
                && l.contains(reason)),
            "{name}: {reason:?} not in:\n{text}"
        );
    }
}

/// Verified, mirrored to a registry and an OCI layout, verified again from
/// each with the same trust root (sync and `occy info`); the bundle and
/// Notation envelope there are byte-for-byte the source's.
#[test]
fn a_verified_mirror_verifies_again() {
    let Some(m) = ss::material() else { return };
    let reg = Registry::shared(Mode::Plain);
    let dir = scratch_dir("verified-mirror");
    let subject = push_image(reg, "provenance-src/app");
    let digest = subject.digest.to_string();
    let bundle = std::fs::read(m.bundle("mirror", &digest, &[])).unwrap();
    let b = ss::push_bundle(reg, &reg.host, "provenance-src/app", &subject, &bundle, Listing::Tag);
    let (env, thumbs) = m.notation("mirror", &subject, &[]);
    let n = ss::push_notation(reg, "provenance-src/app", &subject, &env, &thumbs);
    let verify = format!(
        "{{keyless: {{issuer: \"{ISSUER}\", identity: {ALICE}, trusted_root: {}}}, notation: {{trust_store: {}, trust_policy: {}}}}}",
        m.trusted_root().display(),
        m.trust_store().display(),
        m.trust_policy().display()
    );
    let layout = dir.join("layout");
    let spec = write_spec(
        &dir,
        &format!(
            "defaults:\n  verify: {verify}\nregistries:\n  \"{r}\": {{insecure: true}}\nsync:\n  - from: registry://{r}/provenance-src/app:1.0\n    to: [registry://{r}/provenance-mirror/app, oci://{l}]\n",
            r = reg.host,
            l = layout.display()
        ),
    );
    let out = occy(&["sync", &spec]);
    assert!(out.status.success(), "{}", text_of(&out));

    // Byte for byte, in the mirror registry and the layout.
    for raw in [&b, &n] {
        let got =
            crate::support::cosign::http_get(&reg.host, &format!("provenance-mirror/app/manifests/{}", raw.digest));
        assert_eq!(got, raw.bytes);
        let file = layout.join("blobs/sha256").join(raw.digest.hex());
        assert_eq!(std::fs::read(&file).unwrap(), raw.bytes, "{}", file.display());
    }
    let bundle_blob = layout.join("blobs/sha256").join(occy::image::Digest::of(&bundle).hex());
    assert_eq!(std::fs::read(&bundle_blob).unwrap(), bundle);
    // sigstore-python accepts the mirrored bundle as it is.
    let (accepted, said) = m.sigstore_python(&bundle_blob, &digest, ALICE);
    assert!(accepted, "sigstore-python on the mirrored bundle: {said}");
    let env_blob = layout.join("blobs/sha256").join(occy::image::Digest::of(&env).hex());
    assert_eq!(std::fs::read(env_blob).unwrap(), env);

    // Verified again from the mirror registry and from the layout, keyless
    // alone and Notation alone, into the inside.
    let keyless_only = keyless_verify(m);
    let notation_only = format!(
        "{{notation: {{trust_store: {}, trust_policy: {}}}}}",
        m.trust_store().display(),
        m.trust_policy().display()
    );
    for (i, (from, v, what)) in [
        (
            format!("registry://{}/provenance-mirror/app:1.0", reg.host),
            &keyless_only,
            "keyless alice@example.test",
        ),
        (
            format!("oci://{}:1.0", layout.display()),
            &keyless_only,
            "keyless alice@example.test",
        ),
        (
            format!("oci://{}:1.0", layout.display()),
            &notation_only,
            "Notation C=US, O=Example Releases, CN=release-signer",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let inside = write_spec(
            &dir.join("inside"),
            &format!(
                "defaults:\n  platforms: all\n  verify: {v}\nregistries:\n  \"{r}\": {{insecure: true}}\nsync:\n  - from: {from}\n    to: oci://{}:1.0\n",
                dir.join(format!("inside-{i}")).display(),
                r = reg.host,
            ),
        );
        let out = occy(&["sync", &inside]);
        let text = text_of(&out);
        assert!(out.status.success(), "{from}: {text}");
        assert!(text.contains(&format!("signed by {what}")), "{from}: {text}");
    }
    let root = m.trusted_root().display().to_string();
    let policy = m.trust_policy().display().to_string();
    let store = m.trust_store().display().to_string();
    let layout_ref = format!("oci://{}:1.0", layout.display());
    let args = [
        "info",
        layout_ref.as_str(),
        "--trusted-root",
        &root,
        "--certificate-identity",
        ALICE,
        "--certificate-oidc-issuer",
        ISSUER,
        "--notation-trust-policy",
        &policy,
        "--notation-trust-store",
        &store,
    ];
    let info = String::from_utf8_lossy(&ok(&args).stdout).to_string();
    assert!(
        info.contains(&format!(
            "sigstore bundle {}:\n  verified: keyless alice@example.test",
            b.digest
        )),
        "{info}"
    );
    assert!(
        info.contains(&format!(
            "Notation signature {}:\n  verified: Notation C=US, O=Example Releases, CN=release-signer",
            n.digest
        )),
        "{info}"
    );
}

/// A keyless or Notation `verify:` that cannot work is a sync-file error
/// at its line (exit 2), before anything is fetched.
#[test]
fn verify_settings_that_cannot_work_are_sync_file_errors() {
    let dir = scratch_dir("verify-errors");
    std::fs::write(dir.join("policy.json"), r#"{"version":"1.0","trustPolicies":[{"name":"p","registryScopes":["*"],"signatureVerification":{"level":"audit"},"trustStores":["ca:x"],"trustedIdentities":["*"]}]}"#).unwrap();
    std::fs::write(dir.join("root.json"), r#"{"mediaType":"application/json"}"#).unwrap();
    for (verify, said) in [
        (
            "{keyless: {issuer: https://i.example, trusted_root: missing.json, identity: a@b}}",
            "cannot read the trusted root missing.json",
        ),
        (
            "{keyless: {issuer: https://i.example, trusted_root: root.json, identity: a@b}}",
            "root.json has mediaType \"application/json\", not application/vnd.dev.sigstore.trustedroot+json",
        ),
        (
            "{keyless: {issuer: https://i.example, trusted_root: root.json}}",
            "`keyless` needs exactly one of identity and identity_regexp",
        ),
        (
            "{keyless: {issuer: https://i.example, trusted_root: root.json, identity_regexp: \"(\"}}",
            "identity_regexp \"(\" is not a regular expression",
        ),
        (
            "{notation: {trust_store: store, trust_policy: policy.json}}",
            "has signatureVerification level \"audit\"; occy enforces \"strict\"",
        ),
    ] {
        let spec = write_spec(
            &dir,
            &format!(
                "sync:\n  - from: registry://127.0.0.1:1/app:1.0\n    verify: {verify}\n    to: oci://{}\n",
                dir.join("out").display()
            ),
        );
        let out = occy(&["sync", &spec, "--plan"]);
        let text = text_of(&out);
        assert_eq!(out.status.code(), Some(2), "{verify}: {text}");
        assert!(text.contains(said), "{verify}: {said:?} not in {text}");
        assert!(text.contains("sync.yaml:4:"), "{verify}: no line in {text}");
    }
}
