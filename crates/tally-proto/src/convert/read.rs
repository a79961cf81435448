//! Parameters of read requests: consistency choice and pagination limits.

use tally_core::InvalidInput;

use crate::v1;

/// History page size when the request says 0.
pub const HISTORY_LIMIT_DEFAULT: usize = 50;
/// Largest history page.
pub const HISTORY_LIMIT_MAX: usize = 1_000;

/// The consistency a read asked for; unspecified means linearizable.
pub fn consistency(value: i32) -> Result<v1::Consistency, InvalidInput> {
    match v1::Consistency::try_from(value) {
        Ok(v1::Consistency::Unspecified) | Ok(v1::Consistency::Linearizable) => {
            Ok(v1::Consistency::Linearizable)
        }
        Ok(v1::Consistency::Follower) => Ok(v1::Consistency::Follower),
        Err(_) => Err(InvalidInput::new(
            "consistency",
            format!("unknown value {value}; expected LINEARIZABLE or FOLLOWER"),
        )),
    }
}

/// History page size: 0 means the default; above the maximum is an error, not a silent cap.
pub fn history_limit(limit: u32) -> Result<usize, InvalidInput> {
    match limit as usize {
        0 => Ok(HISTORY_LIMIT_DEFAULT),
        limit if limit <= HISTORY_LIMIT_MAX => Ok(limit),
        limit => Err(InvalidInput::new(
            "limit",
            format!("must be 1..={HISTORY_LIMIT_MAX}, got {limit}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency_defaults_to_linearizable() {
        assert_eq!(consistency(0).unwrap(), v1::Consistency::Linearizable);
        assert_eq!(consistency(2).unwrap(), v1::Consistency::Follower);
        assert_eq!(consistency(7).unwrap_err().field, "consistency");
    }

    #[test]
    fn history_limits() {
        assert_eq!(history_limit(0).unwrap(), HISTORY_LIMIT_DEFAULT);
        assert_eq!(history_limit(1000).unwrap(), 1000);
        assert_eq!(
            history_limit(1001).unwrap_err().to_string(),
            "limit: must be 1..=1000, got 1001"
        );
    }
}
