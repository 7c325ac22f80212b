//! Arbitrary JSON for the property tests of parsers and translators.
//!
//! Every crate that reads agents' JSON fuzzes it the same way: any value, a few levels deep,
//! whose object keys are mostly the names the code under test looks up (so a case gets past the
//! first lookup instead of failing at the top) and sometimes any short string. One strategy
//! serves them all; each crate names its keys.

use proptest::prelude::*;
use serde_json::Value;

/// Any JSON value up to four levels deep: null, booleans, signed and unsigned integers, floats
/// (a non-finite one becomes null, as in serde_json), strings of up to 40 characters, arrays
/// and objects of up to six members. Object keys are drawn from `keys` three times in four,
/// else any string of up to 8 characters (always, when `keys` is empty).
pub fn arb_json(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(arb_key(keys), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_key(keys: &'static [&'static str]) -> BoxedStrategy<String> {
    let any_key = ".{0,8}".prop_map(String::from);
    if keys.is_empty() {
        return any_key.boxed();
    }
    prop_oneof![
        3 => prop::sample::select(keys).prop_map(str::to_owned),
        1 => any_key,
    ]
    .boxed()
}
