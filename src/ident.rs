//! IIN and BIN: the 12-digit identifiers of individuals and legal entities, their check digit,
//! and the masking every log line and metric label must use (IIN/BIN never appear in clear).

use std::fmt;

/// An applicant identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identifier {
    /// Individual identification number (ИИН / ЖСН).
    Iin(String),
    /// Business identification number (БИН / БСН).
    Bin(String),
}

impl Identifier {
    /// The 12 digits.
    pub fn digits(&self) -> &str {
        match self {
            Identifier::Iin(s) | Identifier::Bin(s) => s,
        }
    }

    /// `iin` or `bin`.
    pub fn kind(&self) -> &'static str {
        match self {
            Identifier::Iin(_) => "iin",
            Identifier::Bin(_) => "bin",
        }
    }

    /// Masked form for logs and screens.
    pub fn masked(&self) -> Masked<'_> {
        Masked(self.digits())
    }
}

/// Why an identifier is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not exactly 12 ASCII digits.
    #[error("must be exactly 12 digits")]
    Shape,
    /// The 12th digit does not match the weighted sum.
    #[error("bad check digit")]
    CheckDigit,
}

/// The check digit of the first eleven digits, or `None` when the algorithm yields 10 twice
/// (such numbers are never issued).
pub fn check_digit(first11: &[u8; 11]) -> Option<u8> {
    const W1: [u32; 11] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
    const W2: [u32; 11] = [3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2];
    let sum = |w: &[u32; 11]| first11.iter().zip(w).map(|(d, w)| u32::from(*d) * w).sum::<u32>() % 11;
    let first = sum(&W1);
    let digit = if first == 10 { sum(&W2) } else { first };
    (digit < 10).then_some(digit as u8)
}

fn digits12(s: &str) -> Result<[u8; 12], IdError> {
    let bytes = s.as_bytes();
    if bytes.len() != 12 || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(IdError::Shape);
    }
    let mut out = [0u8; 12];
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = b - b'0';
    }
    let first11: [u8; 11] = out[..11].try_into().map_err(|_| IdError::Shape)?;
    if check_digit(&first11) != Some(out[11]) {
        return Err(IdError::CheckDigit);
    }
    Ok(out)
}

/// Validates an IIN: 12 digits with a valid check digit (the contract's rule; the date and
/// century digits are not checked because test and legacy numbers do not always follow them).
pub fn check_iin(s: &str) -> Result<(), IdError> {
    digits12(s).map(|_| ())
}

/// Validates a BIN: 12 digits with a valid check digit.
pub fn check_bin(s: &str) -> Result<(), IdError> {
    digits12(s).map(|_| ())
}

/// Builds a valid identifier from its first eleven digits (for demo and test data).
pub fn complete(first11: &str) -> Option<String> {
    let bytes: [u8; 11] = first11.bytes().map(|b| b.wrapping_sub(b'0')).collect::<Vec<_>>().try_into().ok()?;
    if bytes.iter().any(|d| *d > 9) {
        return None;
    }
    check_digit(&bytes).map(|c| format!("{first11}{c}"))
}

/// An identifier shown as `8403******29`: enough for staff to tell two people apart on a
/// screen, not enough to identify anyone from a log.
#[derive(Clone, Copy)]
pub struct Masked<'a>(pub &'a str);

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s.len() == 12 && s.is_ascii() {
            write!(f, "{}******{}", &s[..4], &s[10..])
        } else {
            f.write_str("************")
        }
    }
}

impl fmt::Debug for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Masks a 12-digit identifier.
pub fn mask(s: &str) -> String {
    Masked(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_example_identifiers_are_valid() {
        assert_eq!(check_iin("840317000029"), Ok(()));
        assert_eq!(check_bin("081140000436"), Ok(()));
    }

    #[test]
    fn one_changed_digit_breaks_the_check_digit() {
        assert_eq!(check_iin("840317000028"), Err(IdError::CheckDigit));
        assert_eq!(check_bin("081140000437"), Err(IdError::CheckDigit));
    }

    #[test]
    fn shape_is_checked_first() {
        assert_eq!(check_iin("84031700002"), Err(IdError::Shape));
        assert_eq!(check_iin("84031700002x"), Err(IdError::Shape));
    }

    #[test]
    fn complete_makes_valid_numbers() {
        let iin = complete("90010130012").or_else(|| complete("90010130013")).expect("completes");
        assert_eq!(check_iin(&iin), Ok(()));
    }

    #[test]
    fn masking_keeps_only_the_ends() {
        assert_eq!(mask("840317000029"), "8403******29");
        assert_eq!(mask("short"), "************");
    }
}
