use super::*;

fn kv(k: &str, v: Option<&str>) -> (String, Option<String>) {
    (k.to_string(), v.map(str::to_string))
}

type Params = Vec<(String, Option<String>)>;

#[test]
fn tokenize_table() {
    let cases: &[(&str, Params)] = &[
        ("", vec![]),
        ("   \n\t ", vec![]),
        ("quiet", vec![kv("quiet", None)]),
        ("a=1 b=2", vec![kv("a", Some("1")), kv("b", Some("2"))]),
        (
            "phase.channel=\"beta 2\" x",
            vec![kv("phase.channel", Some("beta 2")), kv("x", None)],
        ),
        ("\"a=b c\"", vec![kv("a", Some("b c"))]),
        ("a==b", vec![kv("a", Some("=b"))]),
        ("a= b", vec![kv("a", Some("")), kv("b", None)]),
        (
            "a \"unterminated b",
            vec![kv("a", None), kv("unterminated b", None)],
        ),
        ("a -- phase.mode=local", vec![kv("a", None)]),
        ("a\u{7}b=c", vec![kv("ab", Some("c"))]),
    ];
    for (line, want) in cases {
        assert_eq!(&tokenize(line), want, "line {line:?}");
    }
}

#[test]
fn defaults() {
    let (cfg, warnings) = parse(b"BOOT_IMAGE=/vmlinuz root=/dev/sda console=ttyS0 quiet");
    assert_eq!(cfg.mode, Mode::Internet);
    assert_eq!(cfg.channel, "stable");
    assert_eq!(cfg.stage, Stage::One);
    assert!(cfg.providers.is_empty());
    assert_eq!(cfg.consoles, vec!["ttyS0"]);
    assert!(cfg.quiet);
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn every_key_parses() {
    let (cfg, warnings) = parse(
        b"phase.mode=private phase.channel=beta-2 phase.provider=http://10.0.2.2:8080/ \
          phase.provider=https://x.example/r phase.stage=2 phase.poweroff=init.ready \
          phase.debug phase.shell=on phase.diskless phase.selftest=faults,sigterm,kill-node ip=dhcp \
          phase.fetch.attempts=0 phase.kexec=never phase.status=on",
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(cfg.fetch_attempts, 0);
    for bad in ["-1", "x", "+2", ""] {
        let (cfg, w) = parse(format!("phase.fetch.attempts={bad}").as_bytes());
        assert_eq!((cfg.fetch_attempts, w.len()), (4, 1), "{bad:?}");
    }
    assert_eq!(cfg.mode, Mode::Private);
    assert_eq!(cfg.channel, "beta-2");
    assert_eq!(
        cfg.providers,
        vec!["http://10.0.2.2:8080/", "https://x.example/r"]
    );
    assert_eq!(cfg.stage, Stage::Two);
    assert_eq!(cfg.poweroff.as_deref(), Some("init.ready"));
    assert!(cfg.debug && cfg.shell && cfg.diskless);
    assert_eq!(
        cfg.selftest,
        vec![Selftest::Faults, Selftest::Sigterm, Selftest::Kill("node")]
    );
    let (drills, w) = parse(b"phase.selftest=kill-signals,kill-status");
    assert_eq!(
        (drills.selftest, w.len()),
        (vec![Selftest::Kill("status")], 1)
    );
    assert_eq!(cfg.ip.as_deref(), Some("dhcp"));
    assert_eq!(cfg.kexec, KexecPolicy::Never);
    assert_eq!(cfg.status, StatusSetting::On);
    for (v, want) in [("off", StatusSetting::Off), ("auto", StatusSetting::Auto)] {
        assert_eq!(parse(format!("phase.status={v}").as_bytes()).0.status, want);
    }
    let (cfg, w) = parse(b"phase.status=0.0.0.0");
    assert_eq!((cfg.status, w.len()), (StatusSetting::Auto, 1));
}

#[test]
fn repeated_keys_last_wins_and_warns() {
    let (cfg, warnings) = parse(b"phase.mode=local phase.mode=private");
    assert_eq!(cfg.mode, Mode::Private);
    assert_eq!(
        warnings,
        vec![Warning {
            key: "phase.mode".into(),
            reason: WarningReason::Repeated
        }]
    );
    // Repeated providers accumulate, duplicates collapse, no warning.
    let (cfg, warnings) =
        parse(b"phase.provider=http://a/ phase.provider=http://b/ phase.provider=http://a/");
    assert_eq!(cfg.providers, vec!["http://a/", "http://b/"]);
    assert!(warnings.is_empty());
}

#[test]
fn unknown_and_invalid_warn_but_keep_defaults() {
    let (cfg, warnings) = parse(
        b"phase.bogus=1 phase.mode=turbo phase.channel=UPPER phase.provider=ftp://x \
          phase.stage=3 phase.poweroff=BAD! phase.mode phase.debug=maybe phase.selftest=x",
    );
    assert_eq!(cfg, Config::default());
    let reasons: Vec<(&str, &WarningReason)> = warnings
        .iter()
        .map(|w| (w.key.as_str(), &w.reason))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("phase.bogus", &WarningReason::UnknownKey),
            ("phase.mode", &WarningReason::InvalidValue("turbo".into())),
            (
                "phase.channel",
                &WarningReason::InvalidValue("UPPER".into())
            ),
            (
                "phase.provider",
                &WarningReason::InvalidValue("ftp://x".into())
            ),
            ("phase.stage", &WarningReason::InvalidValue("3".into())),
            (
                "phase.poweroff",
                &WarningReason::InvalidValue("BAD!".into())
            ),
            ("phase.mode", &WarningReason::Repeated),
            ("phase.mode", &WarningReason::MissingValue),
            ("phase.debug", &WarningReason::InvalidValue("maybe".into())),
            ("phase.selftest", &WarningReason::InvalidValue("x".into())),
        ]
    );
}

#[test]
fn garbage_bytes_are_tolerated() {
    let mut raw = b"phase.mode=local \xff\xfe\x00 phase.channel=beta ".to_vec();
    raw.extend_from_slice(&[0x80; 64]);
    let (cfg, warnings) = parse(&raw);
    assert_eq!(cfg.mode, Mode::Local);
    assert_eq!(cfg.channel, "beta");
    assert_eq!(warnings[0].reason, WarningReason::NotUtf8);
    // Arbitrary bytes never panic.
    for seed in 0u32..2000 {
        let bytes: Vec<u8> = (0..64)
            .map(|i| (seed.wrapping_mul(2654435761).wrapping_add(i * 40503) >> 7) as u8)
            .collect();
        let _ = parse(&bytes);
    }
}

#[test]
fn mode_capabilities() {
    assert!(Mode::Internet.allows_dht() && Mode::Internet.allows_lan());
    assert!(!Mode::Local.allows_dht() && Mode::Local.allows_lan() && Mode::Local.persists());
    assert!(!Mode::Private.allows_lan() && !Mode::Private.persists());
}

#[test]
fn docs_list_every_key_with_its_default() {
    let doc = include_str!("../../../docs/cmdline.md");
    for key in KEYS {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{}`", key.name)))
            .unwrap_or_else(|| panic!("docs/cmdline.md has no row for {}", key.name));
        assert!(
            row.contains(&format!("`{}`", key.default)),
            "docs/cmdline.md row for {} lacks default {}",
            key.name,
            key.default
        );
    }
    for line in doc.lines().filter(|l| l.starts_with("| `phase.")) {
        let name = line.split('`').nth(1).unwrap_or_default();
        assert!(
            KEYS.iter().any(|k| k.name == name),
            "docs/cmdline.md documents {name}, which the init does not know"
        );
    }
}

#[test]
fn scrub_values() {
    let cases: &[(&str, Scrub, usize)] = &[
        ("", Scrub::MibPerSec(Scrub::DEFAULT_MIB_S), 0),
        ("phase.scrub=on", Scrub::MibPerSec(8), 0),
        ("phase.scrub=off", Scrub::Off, 0),
        ("phase.scrub=1", Scrub::MibPerSec(1), 0),
        ("phase.scrub=1024", Scrub::MibPerSec(1024), 0),
        ("phase.scrub=0", Scrub::MibPerSec(8), 1),
        ("phase.scrub=1025", Scrub::MibPerSec(8), 1),
        ("phase.scrub=+5", Scrub::MibPerSec(8), 1),
        ("phase.scrub=fast", Scrub::MibPerSec(8), 1),
        ("phase.scrub", Scrub::MibPerSec(8), 1),
    ];
    for (line, want, warns) in cases {
        let (cfg, w) = parse(line.as_bytes());
        assert_eq!((cfg.scrub, w.len()), (*want, *warns), "{line:?}: {w:?}");
    }
}
