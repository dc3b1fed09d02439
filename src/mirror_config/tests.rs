use std::path::Path;

use super::*;

fn spec(yaml: &str) -> SyncSpec {
    match crate::spec::parse(Path::new("/tmp/mirrors.yaml"), yaml.to_string()) {
        Ok(s) => s,
        Err(e) => panic!("test sync file does not parse: {e}"),
    }
}

fn file<'a>(out: &'a Output, name: &str) -> &'a str {
    match out.files.iter().find(|(p, _)| p == name) {
        Some((_, c)) => c,
        None => panic!(
            "no {name} among {:?}",
            out.files.iter().map(|f| &f.0).collect::<Vec<_>>()
        ),
    }
}

const PLAIN: &str = r#"
version: 1
defaults:
  platforms: all
registries:
  "127.0.0.1:5000": { insecure: true }
sync:
  - from: registry://registry.example.test/team/app
    tags: ["1.0"]
    to: "registry://127.0.0.1:5000/{repo}"
"#;

#[test]
fn a_repository_copied_under_its_own_name_is_written_in_every_format() {
    let s = spec(PLAIN);
    let (maps, left) = mappings(&s, &[]).unwrap();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(maps.len(), 1);
    let m = &maps[0];
    assert_eq!(m.source(), "registry.example.test/team/app");
    assert_eq!(m.mirror(), "127.0.0.1:5000/team/app");
    assert!(m.insecure && m.tags && m.digest_gap.is_none());

    let c = render(Format::Containerd, &maps, "mirrors", "mirrors.yaml");
    let text = file(&c, "registry.example.test/hosts.toml");
    let parsed: toml::Table = text.parse().unwrap();
    assert_eq!(parsed["server"].as_str(), Some("https://registry.example.test"));
    let hosts = parsed["host"].as_table().unwrap();
    assert_eq!(
        hosts.keys().collect::<Vec<_>>(),
        ["http://127.0.0.1:5000", "https://127.0.0.1:5000"]
            .iter()
            .collect::<Vec<_>>()
    );
    assert!(text.find("https://127.0.0.1:5000").unwrap() < text.find("\"http://127.0.0.1:5000").unwrap());
    assert_eq!(hosts["https://127.0.0.1:5000"]["skip_verify"].as_bool(), Some(true));
    assert_eq!(
        hosts["http://127.0.0.1:5000"]["capabilities"].as_array().unwrap().len(),
        2
    );

    let r = render(Format::RegistriesConf, &maps, "mirrors", "mirrors.yaml");
    let parsed: toml::Table = file(&r, "occy-mirrors.conf").parse().unwrap();
    let reg = &parsed["registry"].as_array().unwrap()[0];
    assert_eq!(reg["prefix"].as_str(), Some("registry.example.test/team/app"));
    assert_eq!(reg["location"].as_str(), Some("registry.example.test/team/app"));
    let mirror = &reg["mirror"].as_array().unwrap()[0];
    assert_eq!(mirror["location"].as_str(), Some("127.0.0.1:5000/team/app"));
    assert_eq!(mirror["insecure"].as_bool(), Some(true));
    assert!(reg.get("mirror-by-digest-only").is_none());

    for (format, suffix, list) in [
        (Format::Idms, "idms", "imageDigestMirrors"),
        (Format::Itms, "itms", "imageTagMirrors"),
    ] {
        let o = render(format, &maps, "mirrors", "mirrors.yaml");
        let text = file(&o, &format!("occy-mirrors-{suffix}.yaml"));
        assert!(text.contains("apiVersion: config.openshift.io/v1"), "{text}");
        assert!(text.contains(&format!("  {list}:\n  - source: \"registry.example.test/team/app\"\n    mirrors:\n    - \"127.0.0.1:5000/team/app\"\n")), "{text}");
        assert_eq!(o.notes.len(), 1, "the insecure mirror is named: {:?}", o.notes);
    }
}

#[test]
fn a_tag_rename_is_mirrored_for_digests_only() {
    let s = spec(
        r#"
version: 1
defaults: { platforms: all }
sync:
  - from: registry://registry.example.test/team/app
    to: "registry://mirror.test/{repo}:{tag}-mirrored"
"#,
    );
    let (maps, left) = mappings(&s, &[]).unwrap();
    assert!(left.is_empty());
    assert!(!maps[0].tags);
    let itms = render(Format::Itms, &maps, "m", "m.yaml");
    assert!(itms.files.is_empty());
    assert!(itms.left_out[0].why.contains("renames tags"), "{:?}", itms.left_out);
    assert_eq!(render(Format::Idms, &maps, "m", "m.yaml").files.len(), 1);
    let r = render(Format::RegistriesConf, &maps, "m", "m.yaml");
    assert!(file(&r, "occy-m.conf").contains("mirror-by-digest-only = true"));
    let c = render(Format::Containerd, &maps, "m", "m.yaml");
    let parsed: toml::Table = file(&c, "registry.example.test/hosts.toml").parse().unwrap();
    let caps = parsed["host"]["https://mirror.test"]["capabilities"]
        .as_array()
        .unwrap();
    assert_eq!(caps.len(), 1, "pull only, no resolve: {caps:?}");
}

#[test]
fn filters_that_rewrite_layers_and_non_registry_ends_are_left_out() {
    let s = spec(
        r#"
version: 1
sync:
  - from: registry://registry.example.test/team/app:1.0
    filters: [normalize-timestamps]
    to: "registry://mirror.test/{repo}"
  - from: registry://registry.example.test/team/other:1.0
    to: "oci:///srv/layout"
  - from: oci:///srv/layout:1.0
    to: "registry://mirror.test/x"
"#,
    );
    let (maps, left) = mappings(&s, &[]).unwrap();
    assert!(maps.is_empty(), "{maps:?}");
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left[0].why.contains("filters rewrite layers"), "{left:?}");
    assert!(left[0].what.starts_with("sync[0]"));
    assert!(left[1].why.contains("not a registry"), "{left:?}");
    assert!(left[2].why.contains("names no upstream registry"), "{left:?}");
}

#[test]
fn a_platform_subset_is_left_out_of_the_digest_mirror_set_only() {
    let s = spec(
        r#"
version: 1
sync:
  - from: registry://registry.example.test/team/app:1.0
    to: "registry://mirror.test/{repo}"
"#,
    );
    let (maps, _) = mappings(&s, &[]).unwrap();
    assert!(maps[0].digest_gap.is_some());
    let idms = render(Format::Idms, &maps, "m", "m.yaml");
    assert!(idms.files.is_empty());
    assert!(idms.left_out[0].why.contains("platforms"), "{:?}", idms.left_out);
    assert_eq!(render(Format::Itms, &maps, "m", "m.yaml").files.len(), 1);
    assert_eq!(render(Format::RegistriesConf, &maps, "m", "m.yaml").files.len(), 1);
}

#[test]
fn containerd_takes_a_prefix_before_the_repository_but_not_a_rename() {
    let s = spec(
        r#"
version: 1
defaults: { platforms: all }
sync:
  - from: registry://registry.example.test/team/app
    to: "registry://mirror.test/upstream/{repo}"
  - from: registry://other.test/team/tool
    to: "registry://mirror.test/tools/{name}"
"#,
    );
    let (maps, left) = mappings(&s, &[]).unwrap();
    assert!(left.is_empty());
    assert_eq!(maps[1].mirror(), "mirror.test/tools/tool");
    let c = render(Format::Containerd, &maps, "m", "m.yaml");
    let parsed: toml::Table = file(&c, "registry.example.test/hosts.toml").parse().unwrap();
    let h = &parsed["host"]["https://mirror.test/v2/upstream"];
    assert_eq!(h["override_path"].as_bool(), Some(true));
    assert_eq!(c.files.len(), 1);
    assert!(c.left_out[0].why.contains("renames it"), "{:?}", c.left_out);
    // registries.conf and the mirror sets take any repository rename.
    let r = render(Format::RegistriesConf, &maps, "m", "m.yaml");
    assert!(file(&r, "occy-m.conf").contains("prefix = \"other.test/team/tool\""));
    assert!(file(&r, "occy-m.conf").contains("location = \"mirror.test/tools/tool\""));
}

#[test]
fn repository_patterns_map_as_namespaces_or_are_left_out() {
    let s = spec(
        r#"
version: 1
defaults: { platforms: all }
sync:
  - from: "registry://registry.example.test/team/*"
    to: "registry://mirror.test/copy/{repo}"
  - from: "registry://registry.example.test/ops/*"
    to: "registry://mirror.test/ops-flat/{name}"
  - from: "registry://registry.example.test/deep/**"
    to: "registry://mirror.test/flat/{name}"
  - from: "quay://projectquay"
    to: "registry://mirror.test/{repo}-x"
"#,
    );
    let (maps, left) = mappings(&s, &[]).unwrap();
    assert_eq!(maps.len(), 2, "{maps:?}");
    assert_eq!(
        (maps[0].source(), maps[0].mirror()),
        ("registry.example.test/team".into(), "mirror.test/copy/team".into())
    );
    assert_eq!(
        (maps[1].source(), maps[1].mirror()),
        ("registry.example.test/ops".into(), "mirror.test/ops-flat".into())
    );
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.iter()
            .all(|l| l.why.contains("not a rewrite of one namespace prefix")),
        "{left:?}"
    );
}

#[test]
fn insecure_hosts_from_the_command_line_count_too() {
    let s = spec(
        r#"
version: 1
sync:
  - from: registry://registry.example.test/team/app:1.0
    to: "registry://mirror.test:5000/{repo}"
"#,
    );
    let (maps, _) = mappings(&s, &["mirror.test:5000".to_string()]).unwrap();
    assert!(maps[0].insecure);
    let (maps, _) = mappings(&s, &[]).unwrap();
    assert!(!maps[0].insecure);
}

#[test]
fn docker_hub_is_served_from_its_api_host() {
    let s = spec(
        r#"
version: 1
sync:
  - from: "registry://docker.io/library/*"
    to: "registry://mirror.test/hub/{repo}"
"#,
    );
    let (maps, _) = mappings(&s, &[]).unwrap();
    let c = render(Format::Containerd, &maps, "m", "m.yaml");
    let parsed: toml::Table = file(&c, "docker.io/hosts.toml").parse().unwrap();
    assert_eq!(parsed["server"].as_str(), Some("https://registry-1.docker.io"));
    assert!(parsed["host"].get("https://mirror.test/v2/hub").is_some(), "{parsed:?}");
}
