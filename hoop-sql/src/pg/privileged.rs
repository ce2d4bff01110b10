//! PostgreSQL's privileged paths: the built-in routines and catalog
//! relations that read or move data where row masking never looks, and the
//! routines of extensions that expose storage, files or other databases.
//! The statement forms (`COPY … PROGRAM`, foreign servers, `ALTER SYSTEM`)
//! are read by `classify::privileged`.
//!
//! Built-ins count when called unqualified or qualified with `pg_catalog`
//! (another schema's routine of the same name is not built in, and is
//! server-side code instead). Extension routines count in any schema, since
//! an extension installs into whichever schema it is given.

use sqlparser::ast::{ObjectName, ObjectNamePart};

use crate::names::TableRef;

const SERVER_FILES: &str = "reads files on the server";
const SERVER_DIRS: &str = "lists the server's files, logs or write-ahead log";
const LARGE_OBJECT_FILES: &str = "moves data between large objects and files on the server";
const DECODED_WAL: &str = "reads changed rows from the write-ahead log";
const STATISTICS: &str = "carries column values in planner statistics";
const CONFIG_FILES: &str = "reads the server's configuration files";
const CREDENTIALS: &str = "carries credentials";

/// `pg_catalog` routines, sorted.
const BUILTIN_ROUTINES: &[(&str, &str)] = &[
    ("lo_export", LARGE_OBJECT_FILES),
    ("lo_import", LARGE_OBJECT_FILES),
    ("pg_current_logfile", SERVER_DIRS),
    ("pg_hba_file_rules", CONFIG_FILES),
    ("pg_ident_file_mappings", CONFIG_FILES),
    ("pg_logical_slot_get_binary_changes", DECODED_WAL),
    ("pg_logical_slot_get_changes", DECODED_WAL),
    ("pg_logical_slot_peek_binary_changes", DECODED_WAL),
    ("pg_logical_slot_peek_changes", DECODED_WAL),
    ("pg_ls_archive_statusdir", SERVER_DIRS),
    ("pg_ls_dir", SERVER_DIRS),
    ("pg_ls_logdir", SERVER_DIRS),
    ("pg_ls_logicalmapdir", SERVER_DIRS),
    ("pg_ls_logicalsnapdir", SERVER_DIRS),
    ("pg_ls_replslotdir", SERVER_DIRS),
    ("pg_ls_tmpdir", SERVER_DIRS),
    ("pg_ls_waldir", SERVER_DIRS),
    ("pg_mcv_list_items", STATISTICS),
    ("pg_read_binary_file", SERVER_FILES),
    ("pg_read_file", SERVER_FILES),
    ("pg_read_file_old", SERVER_FILES),
    ("pg_show_all_file_settings", CONFIG_FILES),
    ("pg_stat_file", SERVER_FILES),
];

const RAW_PAGES: &str = "reads raw storage pages (pageinspect)";
const WAL_INSPECT: &str = "reads the write-ahead log (pg_walinspect)";
const ADMINPACK: &str = "reads or writes files on the server (adminpack)";
const SURGERY: &str = "changes stored tuples directly (pg_surgery)";
const DBLINK: &str = "reaches another database (dblink)";

/// Extension routines, in any schema, sorted.
const EXTENSION_ROUTINES: &[(&str, &str)] = &[
    ("brin_page_items", RAW_PAGES),
    ("brin_revmap_data", RAW_PAGES),
    ("bt_metap", RAW_PAGES),
    ("bt_multi_page_stats", RAW_PAGES),
    ("bt_page_items", RAW_PAGES),
    ("bt_page_stats", RAW_PAGES),
    ("fsm_page_contents", RAW_PAGES),
    ("get_raw_page", RAW_PAGES),
    ("gin_leafpage_items", RAW_PAGES),
    ("gist_page_items", RAW_PAGES),
    ("gist_page_items_bytea", RAW_PAGES),
    ("hash_page_items", RAW_PAGES),
    ("heap_force_freeze", SURGERY),
    ("heap_force_kill", SURGERY),
    ("heap_page_item_attrs", RAW_PAGES),
    ("heap_page_items", RAW_PAGES),
    ("page_header", RAW_PAGES),
    ("pg_file_length", ADMINPACK),
    ("pg_file_read", ADMINPACK),
    ("pg_file_rename", ADMINPACK),
    ("pg_file_sync", ADMINPACK),
    ("pg_file_unlink", ADMINPACK),
    ("pg_file_write", ADMINPACK),
    ("pg_get_wal_block_info", WAL_INSPECT),
    ("pg_get_wal_record_info", WAL_INSPECT),
    ("pg_get_wal_records_info", WAL_INSPECT),
    ("pg_get_wal_records_info_till_end_of_wal", WAL_INSPECT),
    ("pg_get_wal_stats", WAL_INSPECT),
    ("pg_logdir_ls", ADMINPACK),
    ("tuple_data_split", RAW_PAGES),
];

/// `pg_catalog` relations, sorted.
const RELATIONS: &[(&str, &str)] = &[
    ("pg_authid", CREDENTIALS),
    ("pg_file_settings", CONFIG_FILES),
    ("pg_hba_file_rules", CONFIG_FILES),
    ("pg_ident_file_mappings", CONFIG_FILES),
    ("pg_shadow", CREDENTIALS),
    ("pg_statistic", STATISTICS),
    ("pg_statistic_ext_data", STATISTICS),
    ("pg_stats", STATISTICS),
    ("pg_stats_ext", STATISTICS),
    ("pg_stats_ext_exprs", STATISTICS),
    ("pg_user_mapping", CREDENTIALS),
    ("pg_user_mappings", CREDENTIALS),
];

fn find(list: &[(&str, &'static str)], name: &str) -> Option<&'static str> {
    list.binary_search_by(|(n, _)| n.as_bytes().cmp(name.as_bytes()))
        .ok()
        .map(|i| list[i].1)
}

/// What a call to `name` reaches around the query, if it is privileged.
pub(crate) fn routine(name: &ObjectName) -> Option<&'static str> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) if i.quote_style.is_some() => Some(i.value.clone()),
            ObjectNamePart::Identifier(i) => Some(i.value.to_lowercase()),
            ObjectNamePart::Function(_) => None,
        })
        .collect::<Option<_>>()?;
    let (last, schema) = match parts.as_slice() {
        [last] => (last, None),
        [.., schema, last] => (last, Some(schema.as_str())),
        [] => return None,
    };
    if last.starts_with("dblink") {
        return Some(DBLINK);
    }
    if let Some(what) = find(EXTENSION_ROUTINES, last) {
        return Some(what);
    }
    if schema.is_none_or(|s| s == "pg_catalog") {
        return find(BUILTIN_ROUTINES, last);
    }
    None
}

/// What a read of `table` carries around the query, if it is privileged.
pub(crate) fn relation(table: &TableRef) -> Option<&'static str> {
    if table.schema.as_deref().is_none_or(|s| s == "pg_catalog") {
        find(RELATIONS, &table.name)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_are_sorted_for_binary_search() {
        for list in [BUILTIN_ROUTINES, EXTENSION_ROUTINES, RELATIONS] {
            assert!(list.windows(2).all(|w| w[0].0 < w[1].0), "{list:?}");
        }
    }

    #[test]
    fn every_listed_built_in_is_one_of_the_servers_routines() {
        let catalog = super::super::builtins::catalog();
        for (name, _) in BUILTIN_ROUTINES {
            assert!(
                catalog.routines.iter().any(|(n, ..)| n == name),
                "{name} is not in pg_catalog"
            );
        }
    }
}
