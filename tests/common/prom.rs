//! A strict parser of the Prometheus text format (0.0.4), for tests: it panics on anything
//! a Prometheus server would reject or that the format forbids (bad names, bad escapes,
//! samples outside their declared family, duplicate series, histograms whose buckets are
//! not cumulative or whose `+Inf` bucket disagrees with `_count`).

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// Family name → `counter`, `gauge`, `histogram`, ...
    pub types: HashMap<String, String>,
}

fn valid_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    let first_ok = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
    matches!(chars.next(), Some(c) if first_ok(c))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

fn parse_value(s: &str) -> f64 {
    match s {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => s
            .parse()
            .unwrap_or_else(|_| panic!("sample value {s:?} is not a float")),
    }
}

/// `{a="x",b="y"}` → labels, and the rest of the line.
fn parse_labels(s: &str) -> (BTreeMap<String, String>, &str) {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches(' ');
        if let Some(r) = rest.strip_prefix('}') {
            return (labels, r);
        }
        let eq = rest
            .find('=')
            .unwrap_or_else(|| panic!("label without `=`: {s:?}"));
        let name = rest[..eq].trim();
        assert!(valid_name(name, false), "bad label name {name:?} in {s:?}");
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .unwrap_or_else(|| panic!("label value not quoted: {s:?}"));
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => panic!("bad escape {other:?} in {s:?}"),
                },
                Some((_, '\n')) | None => panic!("unterminated label value in {s:?}"),
                Some((_, c)) => value.push(c),
            }
        };
        assert!(
            labels.insert(name.to_owned(), value).is_none(),
            "label {name} twice in {s:?}"
        );
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// The family a sample belongs to, given its declared type.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|suf| name.strip_suffix(suf))
        .find(|f| types.get(*f).is_some_and(|t| t == "histogram"))
}

pub fn parse(text: &str) -> Exposition {
    assert!(text.ends_with('\n'), "exposition must end with a newline");
    let mut e = Exposition::default();
    let mut current: Option<String> = None;
    let mut seen = std::collections::HashSet::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            let mut parts = c.trim_start().splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(t)) => {
                    assert!(valid_name(name, true), "bad metric name {name:?}");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "bad type {t:?}"
                    );
                    if t == "counter" {
                        assert!(name.ends_with("_total"), "counter {name} without _total");
                    }
                    assert!(
                        e.types.insert(name.to_owned(), t.to_owned()).is_none(),
                        "TYPE {name} declared twice"
                    );
                    current = Some(name.to_owned());
                }
                (Some("HELP"), Some(name), _) => {
                    assert!(valid_name(name, true), "bad metric name {name:?}");
                }
                _ => {}
            }
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => (&line[..i], &line[i..]),
            None => panic!("sample without a value: {line:?}"),
        };
        assert!(valid_name(name, true), "bad metric name {name:?}");
        let (labels, rest) = match rest.strip_prefix('{') {
            Some(r) => parse_labels(r),
            None => (BTreeMap::new(), rest),
        };
        let mut fields = rest.split_whitespace();
        let value = parse_value(
            fields
                .next()
                .unwrap_or_else(|| panic!("no value: {line:?}")),
        );
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .unwrap_or_else(|_| panic!("bad timestamp in {line:?}"));
        }
        assert!(fields.next().is_none(), "trailing fields in {line:?}");
        let family = family_of(name, &e.types)
            .unwrap_or_else(|| panic!("sample {name} has no TYPE"))
            .to_owned();
        assert_eq!(
            current.as_deref(),
            Some(family.as_str()),
            "sample {name} outside its family's block"
        );
        let key = format!("{name}{labels:?}");
        assert!(seen.insert(key), "duplicate series {line:?}");
        e.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    e.check_histograms();
    e
}

impl Exposition {
    /// The value of the series with exactly these labels.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// Like [`get`](Self::get), 0 when the series is absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    pub fn label_values(&self) -> impl Iterator<Item = &str> {
        self.samples
            .iter()
            .flat_map(|s| s.labels.values().map(String::as_str))
    }

    fn check_histograms(&self) {
        let mut series: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
        for s in &self.samples {
            if let Some(f) = s.name.strip_suffix("_bucket") {
                let mut rest = s.labels.clone();
                let le = rest.remove("le").expect("bucket without le");
                series
                    .entry((f.to_owned(), format!("{rest:?}")))
                    .or_default()
                    .push((parse_value(&le), s.value));
            }
        }
        for ((family, labels), buckets) in series {
            for w in buckets.windows(2) {
                assert!(w[0].0 < w[1].0, "{family}{labels}: le not increasing");
                assert!(w[0].1 <= w[1].1, "{family}{labels}: buckets not cumulative");
            }
            let last = buckets.last().expect("buckets");
            assert!(last.0.is_infinite(), "{family}{labels}: no +Inf bucket");
            let count = self
                .samples
                .iter()
                .find(|s| {
                    s.name == format!("{family}_count") && format!("{:?}", s.labels) == labels
                })
                .unwrap_or_else(|| panic!("{family}{labels}: no _count"));
            assert_eq!(
                count.value, last.1,
                "{family}{labels}: +Inf bucket != _count"
            );
        }
    }
}
