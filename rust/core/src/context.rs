//! Context of an event or a request: the shopper's device, the time (hour band, weekday),
//! where they are (country, region), the weather, a segment (demographic or shop-defined)
//! and their intent (search terms, the category browsed).
//!
//! Each context value is one embedding in the same space as users and items, keyed
//! `field=value` (`device=mobile`, `hour=evening`, `hour=19`, `intent=lamp`), learned online like a
//! factorisation machine's feature: the learner ranks with `user + Σ context` against item
//! vectors. This module turns (field, value) text into those keys. Values are normalised
//! (trimmed, lowercased); an unknown field, an empty value, or a value a field cannot take
//! (hour 25) gives no key: context is a hint, never an error.

/// The context fields the model learns from.
pub const CONTEXT_FIELDS: [&str; 8] = ["device", "hour", "weekday", "country", "region", "weather", "segment", "intent"];

/// The most context keys one event carries (the rest are dropped).
pub const MAX_EVENT_CTX: usize = 8;

/// The most intent words kept from one search or intent value.
pub const MAX_INTENT_WORDS: usize = 3;

/// Longest value kept for a free-form field (longer values are cut).
const MAX_VALUE_CHARS: usize = 64;

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const BANDS: [&str; 4] = ["night", "morning", "afternoon", "evening"];

/// The hour band of an hour of the day: night (0–5), morning (6–11), afternoon (12–17),
/// evening (18–23).
pub fn hour_band(hour: u32) -> Option<&'static str> {
    (hour < 24).then(|| BANDS[(hour / 6) as usize])
}

/// Appends the embedding keys of one (field, value) to `out`.
///
/// ```
/// let mut keys = Vec::new();
/// recofast_core::context::keys_of("device", " Mobile ", &mut keys);
/// recofast_core::context::keys_of("hour", "19", &mut keys);
/// recofast_core::context::keys_of("weekday", "5", &mut keys);
/// recofast_core::context::keys_of("intent", "Desk LAMP", &mut keys);
/// recofast_core::context::keys_of("hour", "25", &mut keys);      // not an hour: ignored
/// recofast_core::context::keys_of("mood", "happy", &mut keys);   // not a field: ignored
/// assert_eq!(keys, ["device=mobile", "hour=evening", "hour=19", "weekday=sat", "intent=desk", "intent=lamp"]);
/// ```
pub fn keys_of(field: &str, value: &str, out: &mut Vec<String>) {
    let v = value.trim();
    if v.is_empty() {
        return;
    }
    match field {
        "hour" => {
            // An hour of the day gives its band and the hour itself (finer, learned from
            // more events); a band name gives the band.
            match v.parse::<u32>() {
                Ok(h) => {
                    if let Some(b) = hour_band(h) {
                        out.push(format!("hour={b}"));
                        out.push(format!("hour={h}"));
                    }
                }
                Err(_) => {
                    if let Some(b) = BANDS.iter().find(|b| b.eq_ignore_ascii_case(v)) {
                        out.push(format!("hour={b}"));
                    }
                }
            }
        }
        "weekday" => {
            let day = match v.parse::<usize>() {
                Ok(d) => WEEKDAYS.get(d).copied(),
                Err(_) => {
                    let l = v.to_lowercase();
                    WEEKDAYS.iter().find(|d| l.starts_with(*d)).copied()
                }
            };
            if let Some(d) = day {
                out.push(format!("weekday={d}"));
            }
        }
        "intent" => {
            for w in crate::text::tokenize(v).into_iter().take(MAX_INTENT_WORDS) {
                out.push(format!("intent={w}"));
            }
        }
        f if CONTEXT_FIELDS.contains(&f) => {
            let v: String = v.chars().take(MAX_VALUE_CHARS).flat_map(char::to_lowercase).collect();
            out.push(format!("{f}={v}"));
        }
        _ => {}
    }
}

/// The keys of a whole context, each once, intent words first, then in the order given
/// (at most [`MAX_EVENT_CTX`]).
pub fn keys_of_all<F: AsRef<str>, V: AsRef<str>>(pairs: &[(F, V)]) -> Vec<String> {
    let mut all = Vec::new();
    // The intent first: when a context has more keys than an event keeps, the session's
    // words are the last to go.
    for (f, v) in pairs.iter().filter(|p| p.0.as_ref() == "intent").chain(pairs.iter().filter(|p| p.0.as_ref() != "intent")) {
        keys_of(f.as_ref(), v.as_ref(), &mut all);
    }
    let mut out: Vec<String> = Vec::with_capacity(all.len().min(MAX_EVENT_CTX));
    for k in all {
        if out.len() < MAX_EVENT_CTX && !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_has_keys_and_bad_values_have_none() {
        let k = |f: &str, v: &str| keys_of_all(&[(f, v)]);
        assert_eq!(k("device", "Tablet"), ["device=tablet"]);
        assert_eq!(k("hour", "0"), ["hour=night", "hour=0"]);
        assert_eq!(k("hour", "Afternoon"), ["hour=afternoon"]);
        assert_eq!(k("hour", "-1"), Vec::<String>::new());
        assert_eq!(k("weekday", "Sunday"), ["weekday=sun"]);
        assert_eq!(k("weekday", "7"), Vec::<String>::new());
        assert_eq!(k("country", "GB"), ["country=gb"]);
        assert_eq!(k("region", "Europe"), ["region=europe"]);
        assert_eq!(k("weather", "RAIN"), ["weather=rain"]);
        assert_eq!(k("segment", "age:25-34"), ["segment=age:25-34"]);
        assert_eq!(k("intent", "a big red lamp shade"), ["intent=big", "intent=red", "intent=lamp"]);
        assert_eq!(k("device", "   "), Vec::<String>::new());
        assert_eq!(keys_of_all(&[("device", "m"), ("country", "gb"), ("device", "m")]), ["device=m", "country=gb"]);
        assert_eq!(keys_of_all(&[("device", "m"), ("intent", "lamp")]), ["intent=lamp", "device=m"]);
        assert_eq!(k("colour", "red"), Vec::<String>::new());
        let long = "x".repeat(500);
        assert_eq!(k("country", &long)[0].len(), "country=".len() + 64);
    }
}
