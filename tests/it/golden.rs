//! Golden tables: what the sources say, written here independently of `regulations/*.toml`
//! (from shared/regulations.md §3–§7 and the decisions recorded with the data), compared with
//! the loaded data. A data change that departs from them fails with the route, the step and
//! both values. No services needed.

use std::collections::BTreeMap;
use std::path::Path;

use qyzmet::broker::pool_name;
use qyzmet::regulations::{DeadlineSpec, Regulations, TextSource};

fn repo() -> Regulations {
    Regulations::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("regulations")).unwrap_or_else(|e| panic!("{e}"))
}

/// S4's review and result: the term by sub-type (P-33), the e-licence produced within it.
const S4_TERM: &str = "by form.kind: duplicate=2 working days, issue=15 working days, reissue=10 working days";

/// A route's steps as (pool, deadline).
type Steps = &'static [(&'static str, &'static str)];

/// Every route's steps and deadlines, as (service, region, channel, steps).
/// Sums of table rows are noted where a step is made of several rows (README «Deadline grammar»).
const ROUTES: &[(&str, &str, &str, Steps)] = &[
    // S1 Akmola portal: 30 с – 1 мин (Табл.1 д.5) + 1 минут (1-кесте 6-әрекет); the provider's
    // check 10 минут (Табл.2 д.6, the portal table has no provider row); result within it.
    ("doctor-appointment", "akmola", "portal", &[("intake", "2m"), ("review", "10m"), ("result", "shared")]),
    // S1 Akmola provider: 10–15 с (д.4) + 1,5 мин (д.5); ГБД ФЛ 10 с – 1,5 мин (д.2); 10 минут (д.6).
    (
        "doctor-appointment",
        "akmola",
        "provider",
        &[("intake", "1m45s"), ("registry", "1m30s"), ("review", "10m"), ("result", "shared")],
    ),
    // S1 Astana: routing 30 с – 1 мин; the review «в день обращения» of the sister regulations (D12).
    ("doctor-appointment", "astana", "portal", &[("intake", "1m"), ("review", "same day"), ("result", "shared")]),
    (
        "doctor-appointment",
        "astana",
        "provider",
        &[("intake", "1m45s"), ("registry", "1m30s"), ("review", "same day"), ("result", "shared")],
    ),
    ("phc-attachment", "akmola", "portal", &[("intake", "2m"), ("review", "10m"), ("result", "shared")]),
    (
        "phc-attachment",
        "akmola",
        "provider",
        &[("intake", "1m45s"), ("registry", "1m30s"), ("review", "10m"), ("result", "shared")],
    ),
    // S2 Aktobe: «в течении одного рабочего дня» (001 Табл.1–2 д.7–8, alternative branches).
    ("phc-attachment", "aktobe", "portal", &[("intake", "2m"), ("review", "1 working day"), ("result", "shared")]),
    (
        "phc-attachment",
        "aktobe",
        "provider",
        &[("intake", "1m45s"), ("registry", "1m30s"), ("review", "1 working day"), ("result", "shared")],
    ),
    ("phc-attachment", "astana", "portal", &[("intake", "1m"), ("review", "same day"), ("result", "shared")]),
    (
        "phc-attachment",
        "astana",
        "provider",
        &[("intake", "1m45s"), ("registry", "1m30s"), ("review", "same day"), ("result", "shared")],
    ),
    ("home-doctor-call", "akmola", "portal", &[("intake", "2m"), ("review", "10m"), ("result", "shared")]),
    (
        "home-doctor-call",
        "akmola",
        "provider",
        &[("intake", "1m45s"), ("registry", "1m30s"), ("review", "10m"), ("result", "shared")],
    ),
    ("home-doctor-call", "astana", "portal", &[("intake", "1m"), ("review", "same day"), ("result", "shared")]),
    (
        "home-doctor-call",
        "astana",
        "provider",
        &[("intake", "1m45s"), ("registry", "1m30s"), ("review", "same day"), ("result", "shared")],
    ),
    // S4 portal: payment 1,5 минуты (Табл.1.1 д.4, P-25) after registration (P-15).
    (
        "medical-licence",
        "aktobe",
        "portal",
        &[("intake", "3m"), ("payment", "1m30s"), ("review", S4_TERM), ("result", "shared")],
    ),
    // S4 provider: ГБД ФЛ/ЮЛ 1,5 минуты (Табл.1.2 д.4, P-20).
    (
        "medical-licence",
        "aktobe",
        "provider",
        &[("intake", "30s"), ("registry", "1m30s"), ("review", S4_TERM), ("result", "shared")],
    ),
    // S4 centre: ГБД ФЛ/ЮЛ and ЕНИС, 1,5 минуты each, in one step (Табл.1.3 д.3–4, P-21).
    (
        "medical-licence",
        "aktobe",
        "centre",
        &[("intake", "3m"), ("registry", "1m30s"), ("review", S4_TERM), ("result", "shared")],
    ),
    // S5: «15 тен 30 күн … (жекелеген жағдайларда 6 айға дейін)»: the term starts at 15 calendar
    // days, which staff may extend (P-34, checked below). The result «1 минуттан артық емес».
    ("archive-certificate", "astana", "portal", &[("intake", "2m"), ("review", "15 calendar days"), ("result", "1m")]),
    (
        "archive-certificate",
        "astana",
        "provider",
        &[("intake", "1m"), ("review", "15 calendar days"), ("result", "1m")],
    ),
    ("archive-certificate", "astana", "centre", &[("intake", "2m"), ("review", "15 calendar days"), ("result", "1m")]),
];

fn shown(spec: &DeadlineSpec) -> String {
    match spec {
        DeadlineSpec::Fixed(s) => s.clone(),
        DeadlineSpec::ByField { by, values } => {
            let values: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("by {by}: {}", values.join(", "))
        }
    }
}

/// Every route of the data, as in [`ROUTES`].
fn loaded_routes(regs: &Regulations) -> BTreeMap<(String, String, String), Vec<(String, String)>> {
    let mut out = BTreeMap::new();
    for service in regs.services() {
        for v in &service.file.variants {
            for ch in &v.channels {
                let steps =
                    ch.steps.iter().map(|s| (pool_name(s.pool).to_owned(), shown(&s.deadline))).collect::<Vec<_>>();
                out.insert((service.file.service.to_string(), v.region.to_string(), ch.channel.to_string()), steps);
            }
        }
    }
    out
}

#[test]
fn p17_p25_p31_p33_p46_every_routes_steps_and_deadlines_are_the_sources() {
    let loaded = loaded_routes(&repo());
    let mut problems = Vec::new();
    for (service, region, channel, steps) in ROUTES {
        let key = (service.to_string(), region.to_string(), channel.to_string());
        let want: Vec<(String, String)> = steps.iter().map(|(p, d)| (p.to_string(), d.to_string())).collect();
        match loaded.get(&key) {
            None => problems.push(format!("{service} {region} {channel}: no such route in the data")),
            Some(got) if *got != want => {
                problems.push(format!("{service} {region} {channel}:\n    sources {want:?}\n    data    {got:?}"))
            }
            Some(_) => {}
        }
    }
    for key in loaded.keys() {
        if !ROUTES.iter().any(|(s, r, c, _)| (s.to_string(), r.to_string(), c.to_string()) == *key) {
            problems.push(format!("{key:?}: a route the golden table does not have"));
        }
    }
    assert!(problems.is_empty(), "routes that depart from the sources:\n{}", problems.join("\n"));
}

#[test]
fn p15_p22_p27_lookups_only_off_the_portal_and_outside_s5_and_payment_only_on_the_s4_portal() {
    for (service, region, channel, steps) in ROUTES {
        let pools: Vec<&str> = steps.iter().map(|(p, _)| *p).collect();
        let paid = *service == "medical-licence" && *channel == "portal";
        assert_eq!(pools.contains(&"payment"), paid, "{service} {region} {channel}: payment step (P-27)");
        let looked_up = pools.contains(&"registry");
        let may_look_up = *channel != "portal" && *service != "archive-certificate";
        assert!(
            !looked_up || may_look_up,
            "{service} {region} {channel}: a lookup step the sources do not have (P-22)"
        );
        // P-15: the signature is checked at intake, before anything else; S4 registers, then pays.
        assert_eq!(pools.first(), Some(&"intake"), "{service} {region} {channel}");
        if paid {
            assert_eq!(pools.get(1), Some(&"payment"), "{service} {region} {channel}: payment follows intake");
        }
    }
}

#[test]
fn p40_p50_every_refusal_is_a_reasoned_answer_in_russian_kazakh_and_english() {
    let regs = repo();
    for service in regs.services() {
        for (key, r) in &service.file.refusals {
            for (lang, text) in [("ru", &r.texts.ru), ("kk", &r.texts.kk), ("en", &r.texts.en)] {
                assert!(
                    text.trim().len() > 20,
                    "{} {key}: the {lang} text is no reasoned answer: {text:?}",
                    service.file.code
                );
            }
            assert!(!r.source.trim().is_empty(), "{} {key}: no source", service.file.code);
        }
    }
    for kind in ["invalid_request", "unsupported_service", "deadline_exceeded"] {
        let r = regs.common(kind).expect("common refusal");
        for text in [&r.texts.ru, &r.texts.kk, &r.texts.en] {
            assert!(text.contains("{detail}"), "{kind}: the specific reason is part of the answer: {text:?}");
        }
    }
}

#[test]
fn every_behaviour_p1_to_p52_is_tested_or_has_a_recorded_reason() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qyzmet"))
        .args(["regulations", "trace", "--strict", "--root", env!("CARGO_MANIFEST_DIR")])
        .output()
        .expect("qyzmet regulations trace runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(report.contains("52 behaviours:"), "{report}");
}

/// Every refusal text the data marks `quoted`, as the sources print it for that service and
/// region (the leading «формирование сообщения об …» cut and the head noun put in the
/// nominative, as regulations/README.md «Texts» says). Checked once against shared/seeds/ (every
/// text found in its source, whitespace aside); Astana's «в запрашиваемой ЭГУ» is 003's, Akmola's
/// and Aktobe's «в запрашиваемой услуге» 000's and 001's. (service, key, language, text).
const QUOTED: &[(&str, &str, &str, &str)] = &[
    (
        "doctor-appointment",
        "R2",
        "ru",
        "Отказ в запрашиваемой услуге в связи с не подтверждением подлинности ЭЦП получателя.",
    ),
    (
        "doctor-appointment",
        "R2",
        "kk",
        "Алушының ЭЦҚ-ы нақтылығын расталмауына байланысты, сұратылған қызметтен бас тарту.",
    ),
    (
        "doctor-appointment",
        "R2/astana",
        "ru",
        "Отказ в запрашиваемой ЭГУ в связи с не подтверждением подлинности ЭЦП получателя.",
    ),
    ("doctor-appointment", "R3", "ru", "Отказ в запрашиваемой услуге в связи с имеющимися нарушениями."),
    ("doctor-appointment", "R3", "kk", "Орын алған бұзушылықтарға байланысты сұратылған қызметтерден бас тарту."),
    (
        "doctor-appointment",
        "R4",
        "ru",
        "Невозможность получения данных в связи с отсутствием данных получателя в ГБД ФЛ.",
    ),
    (
        "doctor-appointment",
        "R4",
        "kk",
        "Алушының ЖТ МДБ-да, деректерінің болмауына байланысты, деректерді алу мүмкіндігінің жоқтығы.",
    ),
    (
        "doctor-appointment",
        "R5",
        "ru",
        "Отказ в запрашиваемой услуге в связи с имеющимися нарушениями в документах получателя.",
    ),
    (
        "doctor-appointment",
        "R5",
        "kk",
        "Алушының құжаттарында бұзушылықтардың болуына байланысты сұратылған қызметтен бас тарту.",
    ),
    (
        "phc-attachment",
        "R2",
        "ru",
        "Отказ в запрашиваемой услуге в связи с не подтверждением подлинности ЭЦП получателя.",
    ),
    (
        "phc-attachment",
        "R2",
        "kk",
        "Алушының ЭЦҚ-ы нақтылығын расталмауына байланысты, сұратылған қызметтен бас тарту.",
    ),
    (
        "phc-attachment",
        "R2/astana",
        "ru",
        "Отказ в запрашиваемой ЭГУ в связи с не подтверждением подлинности ЭЦП получателя.",
    ),
    (
        "phc-attachment",
        "R2/aktobe",
        "ru",
        "Отказ в запрашиваемой услуге в связи с не подтверждением подлинности ЭЦП получателя.",
    ),
    ("phc-attachment", "R3", "ru", "Отказ в запрашиваемой услуге в связи с имеющимися нарушениями."),
    ("phc-attachment", "R3", "kk", "Орын алған бұзушылықтарға байланысты сұратылған қызметтерден бас тарту."),
    ("phc-attachment", "R4", "ru", "Невозможность получения данных в связи с отсутствием данных получателя в ГБД ФЛ."),
    (
        "phc-attachment",
        "R4",
        "kk",
        "Алушының ЖТ МДБ-да, деректерінің болмауына байланысты, деректерді алу мүмкіндігінің жоқтығы.",
    ),
    (
        "phc-attachment",
        "R5",
        "ru",
        "Отказ в запрашиваемой услуге в связи с имеющимися нарушениями в документах получателя.",
    ),
    (
        "phc-attachment",
        "R5",
        "kk",
        "Алушының құжаттарында бұзушылықтардың болуына байланысты сұратылған қызметтен бас тарту.",
    ),
    (
        "home-doctor-call",
        "R2",
        "ru",
        "Отказ в запрашиваемой услуге в связи с не подтверждением подлинности ЭЦП получателя.",
    ),
    (
        "home-doctor-call",
        "R2",
        "kk",
        "Алушының ЭЦҚ-ы нақтылығын расталмауына байланысты, сұратылған қызметтен бас тарту.",
    ),
    (
        "home-doctor-call",
        "R2/astana",
        "ru",
        "Отказ в запрашиваемой ЭГУ в связи с не подтверждением подлинности ЭЦП получателя.",
    ),
    ("home-doctor-call", "R3", "ru", "Отказ в запрашиваемой услуге в связи с имеющимися нарушениями."),
    ("home-doctor-call", "R3", "kk", "Орын алған бұзушылықтарға байланысты сұратылған қызметтерден бас тарту."),
    (
        "home-doctor-call",
        "R4",
        "ru",
        "Невозможность получения данных в связи с отсутствием данных получателя в ГБД ФЛ.",
    ),
    (
        "home-doctor-call",
        "R4",
        "kk",
        "Алушының ЖТ МДБ-да, деректерінің болмауына байланысты, деректерді алу мүмкіндігінің жоқтығы.",
    ),
    (
        "home-doctor-call",
        "R5",
        "ru",
        "Отказ в запрашиваемой услуге в связи с имеющимися нарушениями в документах получателя.",
    ),
    (
        "home-doctor-call",
        "R5",
        "kk",
        "Алушының құжаттарында бұзушылықтардың болуына байланысты сұратылған қызметтен бас тарту.",
    ),
    (
        "medical-licence",
        "L2",
        "ru",
        "Отказ в запрашиваемой электронной государственной услуге, в связи с отсутствием оплаты за оказание электронной государственной услуги в ИС ГБД «Е лицензирование».",
    ),
    (
        "medical-licence",
        "L3",
        "ru",
        "Отказ в запрашиваемой электронной государственной услуге в связи с не подтверждением подлинности ЭЦП получателя.",
    ),
    (
        "medical-licence",
        "L4",
        "ru",
        "Отказ в запрашиваемой электронной государственной услуге в связи с имеющимися нарушениями в данных получателя в ИС ГБД «Е лицензирование».",
    ),
    (
        "medical-licence",
        "L6",
        "ru",
        "Невозможность получения данных в связи с отсутствием данных получателя в ГБД ФЛ/ГБД ЮЛ.",
    ),
    (
        "medical-licence",
        "L7",
        "ru",
        "Отказ в запрашиваемой электронной государственной услуге в связи с имеющимися нарушениями в данных получателя в ИС ГБД «Е лицензирование».",
    ),
    (
        "medical-licence",
        "L9",
        "ru",
        "Отказ в запрашиваемой электронной государственной услуге в связи с имеющимися нарушениями в данных получателя в ИС ГБД «Е лицензирование».",
    ),
    (
        "archive-certificate",
        "A2",
        "kk",
        "ЖАО қызметкерінің ЭЦҚ түпнұсқалығының растамауына байланысты сұрау салынатын электрондық мемлекеттік қызметтен бас тарту.",
    ),
    (
        "archive-certificate",
        "A4",
        "kk",
        "ХҚКО операторының ЭЦҚ түпнұсқалығының растамауына байланысты сұрау салынатын электрондық мемлекеттік қызметтен бас тарту.",
    ),
    (
        "archive-certificate",
        "A6",
        "kk",
        "Тұтынушының ЭЦҚ түпнұсқалығының растамауына байланысты сұрау салынатын электрондық мемлекеттік қызметтен бас тарту.",
    ),
    ("archive-certificate", "A7", "kk", "Мұрағаттық анықтаманы беруден дәлелді түрде бас тарту."),
];

#[test]
fn p16_p40_p47_p50_every_quoted_refusal_text_is_the_sources_wording() {
    let regs = repo();
    let mut problems = Vec::new();
    let mut quoted_in_data = 0;
    for service in regs.services() {
        let file = service.file.service.to_string();
        for (key, r) in &service.file.refusals {
            for (lang, text, source) in [("ru", &r.texts.ru, r.text_source.ru), ("kk", &r.texts.kk, r.text_source.kk)] {
                let golden = QUOTED.iter().find(|(s, k, l, _)| *s == file && *k == key && *l == lang);
                match (source, golden) {
                    (TextSource::Quoted, Some((_, _, _, want))) => {
                        quoted_in_data += 1;
                        if text != want {
                            problems.push(format!("{file} {key} {lang}:\n    sources {want}\n    data    {text}"));
                        }
                    }
                    (TextSource::Quoted, None) => {
                        problems.push(format!("{file} {key} {lang}: marked quoted, not in the golden table"))
                    }
                    (_, Some(_)) => {
                        problems.push(format!("{file} {key} {lang}: the sources' words, but not marked quoted"))
                    }
                    (_, None) => {}
                }
            }
        }
    }
    assert!(problems.is_empty(), "refusal texts that depart from the sources:\n{}", problems.join("\n"));
    assert_eq!(quoted_in_data, QUOTED.len(), "every golden text is in the data");
}

#[test]
fn p16_p47_each_region_refuses_a_signature_in_its_own_sources_words() {
    let regs = repo();
    let expected = [
        ("doctor-appointment", "akmola", "R2"),
        ("doctor-appointment", "astana", "R2/astana"),
        ("phc-attachment", "akmola", "R2"),
        ("phc-attachment", "aktobe", "R2/aktobe"),
        ("phc-attachment", "astana", "R2/astana"),
        ("home-doctor-call", "akmola", "R2"),
        ("home-doctor-call", "astana", "R2/astana"),
    ];
    for service in regs.services() {
        for v in &service.file.variants {
            for ch in v.channels.iter().filter(|c| c.channel.to_string() == "portal") {
                let (s, r) = (service.file.service.to_string(), v.region.to_string());
                if let Some((_, _, key)) = expected.iter().find(|(es, er, _)| *es == s && *er == r) {
                    assert_eq!(ch.signature.refusal.as_deref(), Some(*key), "{s} {r} portal");
                }
            }
        }
    }
}

#[test]
fn p34_s5_decision_steps_start_at_15_calendar_days_and_extend_to_30_or_exceptionally_6_months() {
    let regs = repo();
    let s5 = regs.service(qyzmet::contract::ServiceCode::ArchiveCertificate).expect("S5");
    for v in &s5.variants {
        for ch in &v.channels {
            let review = ch.steps.iter().find(|s| pool_name(s.pool) == "review").expect("a review step");
            let x = review.extension.as_ref().unwrap_or_else(|| panic!("{} review can be extended", ch.channel));
            assert_eq!((x.up_to.as_str(), x.exceptional_up_to.as_deref()), ("30 calendar days", Some("6 months")));
        }
    }
    // Nothing else may be extended: the other regulations give no extension.
    for service in regs.services().filter(|s| s.file.code != "S5") {
        for v in &service.file.variants {
            for ch in &v.channels {
                assert!(
                    ch.steps.iter().all(|s| s.extension.is_none()),
                    "{} {} {}",
                    service.file.code,
                    v.region,
                    ch.channel
                );
            }
        }
    }
}
