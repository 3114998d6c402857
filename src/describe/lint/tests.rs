//! Each rule with texts that must pass and texts that must fail, in English, German and French
//! (and the other languages where the rule depends on them).

use super::*;

fn expect(language: &str) -> Expectation<'_> {
    Expectation {
        language,
        max_chars: Some(125),
        max_words: None,
        title: None,
    }
}

fn codes(output: Output, text: &str, expect: &Expectation<'_>) -> Vec<String> {
    lint(output, text, expect)
        .into_iter()
        .map(|f| f.code)
        .collect()
}

fn alt(language: &str, text: &str) -> Vec<String> {
    codes(Output::AltText, text, &expect(language))
}

/// Good alt text in each language: no rule fires.
const CLEAN: &[(&str, &str)] = &[
    (
        "en",
        "Red leather handbag with a gold clasp, seen from the front on a white background",
    ),
    (
        "de",
        "Rote Lederhandtasche mit goldenem Verschluss, von vorn auf weißem Hintergrund",
    ),
    (
        "fr",
        "Sac à main en cuir rouge avec un fermoir doré, vu de face sur fond blanc",
    ),
    (
        "es",
        "Bolso de cuero rojo con cierre dorado, visto de frente sobre fondo blanco",
    ),
    ("ja", "白い背景に金色の留め具が付いた赤い革のハンドバッグ"),
];

#[test]
fn clean_texts_have_no_findings() {
    for (language, text) in CLEAN {
        assert_eq!(
            alt(language, text),
            Vec::<String>::new(),
            "{language}: {text}"
        );
    }
}

/// (rule, language, a text that must fire it). Each also appears clean in `CLEAN`.
const FAILING: &[(&str, &str, &str)] = &[
    ("empty", "en", "   "),
    ("too_short", "en", "Bag"),
    ("too_short", "de", "Tasche"),
    ("too_short", "fr", "Sac"),
    (
        "too_long",
        "en",
        "A red leather handbag with a gold clasp and a long shoulder strap, seen from the front on a white background, with a matching wallet beside it",
    ),
    (
        "too_long",
        "de",
        "Eine rote Lederhandtasche mit goldenem Verschluss und langem Schulterriemen, von vorn auf weißem Hintergrund, daneben eine passende Geldbörse aus Leder",
    ),
    (
        "too_long",
        "fr",
        "Un sac à main en cuir rouge avec un fermoir doré et une longue bandoulière, vu de face sur fond blanc, avec un portefeuille assorti posé à côté",
    ),
    (
        "redundant_opening",
        "en",
        "Image of a red leather handbag with a gold clasp",
    ),
    (
        "redundant_opening",
        "en",
        "A photo of a red leather handbag with a gold clasp",
    ),
    (
        "redundant_opening",
        "de",
        "Bild von einer roten Lederhandtasche mit goldenem Verschluss",
    ),
    (
        "redundant_opening",
        "de",
        "Das Foto zeigt eine rote Lederhandtasche mit Verschluss",
    ),
    (
        "redundant_opening",
        "fr",
        "Image d'un sac à main en cuir rouge avec un fermoir doré",
    ),
    (
        "redundant_opening",
        "fr",
        "Une photo de sac à main en cuir rouge avec un fermoir doré",
    ),
    (
        "redundant_opening",
        "ja",
        "金色の留め具が付いた赤い革のハンドバッグの写真",
    ),
    (
        "redundant_opening",
        "de",
        "Alt text: rote Lederhandtasche mit goldenem Verschluss",
    ),
    ("file_name", "en", "IMG_4032.JPG"),
    ("file_name", "de", "rote-handtasche-vorne-01.jpg"),
    ("file_name", "fr", "sac_cuir_rouge_face"),
    ("file_name", "en", "DSC01234"),
    ("placeholder", "en", "Product image"),
    ("placeholder", "en", "image 1"),
    ("placeholder", "de", "Produktbild"),
    ("placeholder", "fr", "Aucune description"),
    (
        "placeholder",
        "fr",
        "Lorem ipsum dolor sit amet, consectetur",
    ),
    (
        "repeated_words",
        "en",
        "Red leather leather handbag with a gold clasp",
    ),
    (
        "repeated_words",
        "de",
        "Rote Lederhandtasche mit mit goldenem Verschluss",
    ),
    (
        "repeated_words",
        "fr",
        "Sac à main en cuir cuir rouge avec un fermoir",
    ),
    (
        "repetition_loop",
        "en",
        "A red bag with a gold clasp, a red bag with a gold clasp, a red bag with a gold clasp",
    ),
    (
        "repetition_loop",
        "de",
        "Tasche Tasche Tasche aus rotem Leder",
    ),
    (
        "repetition_loop",
        "fr",
        "un sac rouge un sac rouge un sac rouge sur fond blanc",
    ),
    ("all_caps", "en", "RED LEATHER HANDBAG WITH A GOLD CLASP"),
    (
        "all_caps",
        "de",
        "ROTE LEDERHANDTASCHE MIT GOLDENEM VERSCHLUSS",
    ),
    ("all_caps", "fr", "SAC À MAIN EN CUIR ROUGE"),
    (
        "unreadable_characters",
        "en",
        "Red leather handbag ★★★★★ with a gold clasp",
    ),
    (
        "unreadable_characters",
        "en",
        "Red leather handbag 👜 with a gold clasp",
    ),
    (
        "unreadable_characters",
        "de",
        "Rote Lederhandtasche!!! Mit goldenem Verschluss",
    ),
    (
        "unreadable_characters",
        "fr",
        "Sac à main en cuir rouge &amp; fermoir doré",
    ),
    (
        "unreadable_characters",
        "fr",
        "Sac à main rouge, voir https://example.com/sac",
    ),
    (
        "unreadable_characters",
        "en",
        "Red leather handbag #summer with a gold clasp",
    ),
    (
        "language_mismatch",
        "de",
        "A red leather handbag with a gold clasp on a white background",
    ),
    (
        "language_mismatch",
        "fr",
        "Eine rote Lederhandtasche mit einem goldenen Verschluss auf weißem Grund",
    ),
    (
        "language_mismatch",
        "en",
        "Un sac à main en cuir rouge avec un fermoir doré sur fond blanc",
    ),
    (
        "language_mismatch",
        "ja",
        "A red leather handbag with a gold clasp on a white background",
    ),
    (
        "promotional",
        "en",
        "Red leather handbag with a gold clasp, 20% off, buy now",
    ),
    (
        "promotional",
        "de",
        "Rote Lederhandtasche mit goldenem Verschluss, jetzt kaufen",
    ),
    (
        "promotional",
        "fr",
        "Sac à main en cuir rouge avec un fermoir doré, livraison gratuite",
    ),
];

#[test]
fn every_rule_fires_on_its_failing_examples() {
    for (code, language, text) in FAILING {
        let mut e = expect(language);
        if *code == "too_long" {
            e.max_chars = Some(125);
            assert!(
                text.chars().count() > 125,
                "the example must be long: {text}"
            );
        }
        let found = codes(Output::AltText, text, &e);
        assert!(
            found.iter().any(|c| c == code),
            "{code} did not fire on {language} {text:?}: {found:?}"
        );
    }
    for (code, _, _) in RULES {
        assert!(
            FAILING.iter().any(|(c, _, _)| c == code) || *code == "repeats_title",
            "{code} has no failing example"
        );
    }
}

#[test]
fn rules_do_not_fire_where_the_text_is_fine() {
    for (language, text, not) in [
        (
            "en",
            "Wholesale pack of six red leather handbags",
            "promotional",
        ),
        (
            "en",
            "Imagery-inspired print on a cotton tote bag",
            "redundant_opening",
        ),
        (
            "de",
            "Bildschöne rote Lederhandtasche mit goldenem Verschluss",
            "redundant_opening",
        ),
        (
            "fr",
            "Photographe tenant un sac à main en cuir rouge",
            "redundant_opening",
        ),
        (
            "en",
            "Red handbag, 3 sizes: small, medium and large",
            "unreadable_characters",
        ),
        (
            "en",
            "Red leather handbag with a gold clasp. Matching wallet…",
            "unreadable_characters",
        ),
        (
            "en",
            "Red NASA T-shirt folded on a wooden table",
            "all_caps",
        ),
        (
            "de",
            "Rote Tasche, die die passende Geldbörse enthält",
            "repetition_loop",
        ),
        ("en", "Image sensor module for a USB camera", "placeholder"),
        ("fr", "Sac à main rouge de la marque Jane Doe.", "file_name"),
    ] {
        let found = alt(language, text);
        assert!(
            !found.iter().any(|c| c == not),
            "{not} fired on {text:?}: {found:?}"
        );
    }
}

#[test]
fn a_text_that_only_repeats_the_title_is_flagged() {
    for (language, title, same, better) in [
        (
            "en",
            "Jane Doe Leather Handbag",
            "Jane Doe leather handbag.",
            "Jane Doe leather handbag in red, seen from the side",
        ),
        (
            "de",
            "Jane Doe Lederhandtasche",
            "Jane Doe Lederhandtasche",
            "Jane Doe Lederhandtasche in Rot, von der Seite",
        ),
        (
            "fr",
            "Sac en cuir Jane Doe",
            "Sac en cuir Jane Doe",
            "Sac en cuir Jane Doe rouge, vu de côté",
        ),
    ] {
        let e = Expectation {
            title: Some(title),
            ..expect(language)
        };
        assert!(
            codes(Output::AltText, same, &e).contains(&"repeats_title".to_string()),
            "{same}"
        );
        assert!(
            !codes(Output::AltText, better, &e).contains(&"repeats_title".to_string()),
            "{better}"
        );
    }
}

#[test]
fn descriptions_and_keywords_get_the_rules_that_fit_them() {
    let description = Expectation {
        max_chars: None,
        max_words: Some(10),
        ..expect("en")
    };
    let long = "A roomy red leather handbag with a gold clasp, two inner pockets and a long adjustable strap.";
    assert!(codes(Output::Description, long, &description).contains(&"too_long".to_string()));
    assert!(
        !codes(
            Output::Description,
            "Buy now: a roomy red leather handbag with a gold clasp.",
            &Expectation {
                max_words: None,
                ..description
            }
        )
        .contains(&"promotional".to_string()),
        "a description may sell"
    );
    let keywords = expect("en");
    assert_eq!(
        codes(
            Output::Keywords,
            "leather handbag, red bag, gold clasp",
            &keywords
        ),
        Vec::<String>::new()
    );
    assert!(
        codes(
            Output::Keywords,
            "leather handbag, image, gold clasp",
            &keywords
        )
        .contains(&"placeholder".to_string())
    );
    assert!(
        codes(Output::Keywords, "leather handbag, bag.jpg", &keywords)
            .contains(&"file_name".to_string())
    );
}

#[test]
fn findings_are_worst_first_and_carry_their_excerpt() {
    let findings = lint(Output::AltText, "Image of IMG_0001.jpg", &expect("en"));
    assert_eq!(findings[0].severity, Severity::Error);
    assert_eq!(findings[0].code, "file_name");
    assert_eq!(findings[0].excerpt.as_deref(), Some("IMG_0001.jpg"));
    assert!(
        findings
            .iter()
            .any(|f| f.code == "redundant_opening" && f.excerpt.as_deref() == Some("image of"))
    );
    assert_eq!(worst(&findings), Some(Severity::Error));
    assert_eq!(worst(&[]), None);
}

#[test]
fn the_longest_edit_is_checked_in_linear_time() {
    // 10,000 characters without a repeat of four: every n-gram counted once per length.
    let text: String = (0..10_000u32)
        .map(|i| char::from_u32(0x4E00 + (i * 7919) % 20_000).unwrap())
        .collect();
    let findings = lint(Output::Description, &text, &expect("zh"));
    assert!(
        !findings.iter().any(|f| f.code == "repetition_loop"),
        "{findings:?}"
    );
    let looped = "红色皮包".repeat(3) + &text[..30];
    assert!(
        codes(Output::Description, &looped, &expect("zh")).contains(&"repetition_loop".to_string())
    );
}
