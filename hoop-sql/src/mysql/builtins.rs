//! MariaDB's and MySQL's own functions and operators: calls hoop can see
//! through. Any other name (a stored function, a UDF loaded with `CREATE
//! FUNCTION … SONAME`, a schema-qualified name) is code hoop cannot see
//! (`policy.server_code`). Functions that reach outside the statement's
//! tables are deliberately left out, so that they count as server code:
//! `LOAD_FILE` (reads the server's files), `SYS_EXEC`/`SYS_EVAL` (UDFs),
//! `MASTER_POS_WAIT` and friends.

use sqlparser::ast::{ObjectName, ObjectNamePart};

use crate::dialect::{Routine, Volatility};

/// Built-in functions whose result may change from call to call, or that
/// have effects (sorted).
const VOLATILE: &[&str] = &[
    "benchmark",
    "connection_id",
    "curdate",
    "current_date",
    "current_time",
    "current_timestamp",
    "curtime",
    "found_rows",
    "get_lock",
    "is_free_lock",
    "is_used_lock",
    "last_insert_id",
    "localtime",
    "localtimestamp",
    "nextval",
    "now",
    "rand",
    "release_all_locks",
    "release_lock",
    "row_count",
    "setval",
    "sleep",
    "sysdate",
    "unix_timestamp",
    "utc_date",
    "utc_time",
    "utc_timestamp",
    "uuid",
    "uuid_short",
];

/// Built-in functions whose result depends on the session or the data
/// (sorted).
const STABLE: &[&str] = &[
    "charset",
    "coercibility",
    "collation",
    "current_role",
    "current_user",
    "database",
    "lastval",
    "schema",
    "session_user",
    "system_user",
    "user",
    "version",
];

/// Built-in functions whose result depends only on their arguments (sorted).
const IMMUTABLE: &[&str] = &[
    "abs",
    "acos",
    "adddate",
    "addtime",
    "aes_decrypt",
    "aes_encrypt",
    "any_value",
    "ascii",
    "asin",
    "atan",
    "atan2",
    "avg",
    "bin",
    "bit_and",
    "bit_count",
    "bit_length",
    "bit_or",
    "bit_xor",
    "cast",
    "ceil",
    "ceiling",
    "char",
    "char_length",
    "character_length",
    "chr",
    "coalesce",
    "compress",
    "concat",
    "concat_ws",
    "conv",
    "convert",
    "convert_tz",
    "cos",
    "cot",
    "count",
    "crc32",
    "crc32c",
    "cume_dist",
    "date",
    "date_add",
    "date_format",
    "date_sub",
    "datediff",
    "day",
    "dayname",
    "dayofmonth",
    "dayofweek",
    "dayofyear",
    "decode",
    "degrees",
    "dense_rank",
    "elt",
    "encode",
    "exp",
    "export_set",
    "extract",
    "field",
    "find_in_set",
    "first_value",
    "floor",
    "format",
    "format_bytes",
    "from_base64",
    "from_days",
    "from_unixtime",
    "get_format",
    "greatest",
    "group_concat",
    "hex",
    "hour",
    "if",
    "ifnull",
    "inet6_aton",
    "inet6_ntoa",
    "inet_aton",
    "inet_ntoa",
    "insert",
    "instr",
    "isnull",
    "json_array",
    "json_array_append",
    "json_array_insert",
    "json_arrayagg",
    "json_compact",
    "json_contains",
    "json_contains_path",
    "json_depth",
    "json_detailed",
    "json_equals",
    "json_exists",
    "json_extract",
    "json_insert",
    "json_keys",
    "json_length",
    "json_loose",
    "json_merge",
    "json_merge_patch",
    "json_merge_preserve",
    "json_normalize",
    "json_object",
    "json_objectagg",
    "json_overlaps",
    "json_query",
    "json_quote",
    "json_remove",
    "json_replace",
    "json_search",
    "json_set",
    "json_type",
    "json_unquote",
    "json_valid",
    "json_value",
    "lag",
    "last_day",
    "last_value",
    "lcase",
    "lead",
    "least",
    "left",
    "length",
    "lengthb",
    "ln",
    "locate",
    "log",
    "log10",
    "log2",
    "lower",
    "lpad",
    "ltrim",
    "make_set",
    "makedate",
    "maketime",
    "max",
    "md5",
    "median",
    "microsecond",
    "mid",
    "min",
    "minute",
    "mod",
    "month",
    "monthname",
    "natural_sort_key",
    "nth_value",
    "ntile",
    "nullif",
    "nvl",
    "nvl2",
    "oct",
    "octet_length",
    "ord",
    "percent_rank",
    "percentile_cont",
    "percentile_disc",
    "period_add",
    "period_diff",
    "pi",
    "position",
    "pow",
    "power",
    "quarter",
    "quote",
    "radians",
    "rank",
    "regexp_instr",
    "regexp_replace",
    "regexp_substr",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row_number",
    "rpad",
    "rtrim",
    "sec_to_time",
    "second",
    "sformat",
    "sha",
    "sha1",
    "sha2",
    "sign",
    "sin",
    "soundex",
    "space",
    "sqrt",
    "std",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "str_to_date",
    "strcmp",
    "subdate",
    "substr",
    "substring",
    "substring_index",
    "subtime",
    "sum",
    "tan",
    "time",
    "time_format",
    "time_to_sec",
    "timediff",
    "timestamp",
    "timestampadd",
    "timestampdiff",
    "to_base64",
    "to_char",
    "to_days",
    "to_seconds",
    "trim",
    "truncate",
    "ucase",
    "uncompress",
    "uncompressed_length",
    "unhex",
    "upper",
    "var_pop",
    "var_samp",
    "variance",
    "week",
    "weekday",
    "weekofyear",
    "weight_string",
    "year",
    "yearweek",
];

/// MySQL's operators (sorted by bytes).
const OPERATORS: &[&str] = &[
    "!", "!=", "%", "&", "&&", "*", "+", "-", "->", "->>", "/", ":=", "<", "<<", "<=", "<=>", "<>",
    "=", ">", ">=", ">>", "^", "|", "||", "~",
];

/// What a call to `name` reaches.
pub(crate) fn routine(name: &ObjectName) -> Routine {
    // Only an unqualified name is the server's own: `db.concat` is a
    // stored function named `concat`.
    let [ObjectNamePart::Identifier(ident)] = name.0.as_slice() else {
        return Routine::NotBuiltIn;
    };
    let lower = ident.value.to_ascii_lowercase();
    let found = |list: &[&str]| list.binary_search(&lower.as_str()).is_ok();
    if found(IMMUTABLE) {
        Routine::BuiltIn(Volatility::Immutable)
    } else if found(STABLE) {
        Routine::BuiltIn(Volatility::Stable)
    } else if found(VOLATILE) {
        Routine::BuiltIn(Volatility::Volatile)
    } else {
        Routine::NotBuiltIn
    }
}

/// Whether `symbol` is one of the server's operators.
pub(crate) fn operator(symbol: &str) -> bool {
    OPERATORS
        .binary_search_by(|o| o.as_bytes().cmp(symbol.as_bytes()))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_sorted_for_binary_search() {
        for list in [VOLATILE, STABLE, IMMUTABLE] {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "{list:?}");
        }
        assert!(
            OPERATORS
                .windows(2)
                .all(|w| w[0].as_bytes() < w[1].as_bytes())
        );
    }
}
