//! Fuzzes label and field selector parsing: any string must parse or fail cleanly, and a
//! parsed label selector must re-parse from its printed form.
#![no_main]

use apimachinery::selector::{field::FieldSelector, label::LabelSelector};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(sel) = LabelSelector::parse(s) {
        let printed = sel.to_string();
        let again = LabelSelector::parse(&printed).expect("printed selectors parse");
        assert_eq!(again.to_string(), printed);
    }
    let _ = FieldSelector::parse(s);
});
