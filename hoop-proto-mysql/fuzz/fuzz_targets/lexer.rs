//! The SQL lexer under every setting: tokens tile the text, statements are
//! ordered slices of it, the executable text keeps every offset, and a
//! fingerprint never depends on the settings it was computed with (the
//! property that makes it safe as a cache key across sessions).
#![no_main]

use hoop_sql::mysql::lexer::{
    Charset, LexerOptions, Server, SqlMode, executable_sql, fingerprint, redact_literals, split,
    tokenize,
};
use libfuzzer_sys::fuzz_target;

fn options(mode: u8) -> LexerOptions {
    let versions = [101_119, 80_036, 50_699, 100_000];
    LexerOptions {
        server: Server {
            mariadb: mode & 1 == 0,
            version_id: versions[usize::from(mode >> 1) & 3],
        },
        sql_mode: SqlMode {
            ansi_quotes: mode & 8 != 0,
            no_backslash_escapes: mode & 16 != 0,
            mssql: mode & 32 != 0,
        },
        charset: match mode >> 6 {
            0 => Charset::Utf8,
            1 => Charset::SingleByte,
            2 => Charset::BackslashTrail,
            _ => Charset::MultiByteSafe,
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, sql)) = data.split_first() else {
        return;
    };
    let o = options(mode);
    if let Ok(tokens) = tokenize(sql, &o) {
        let mut at = 0;
        for t in &tokens {
            assert_eq!(t.start, at);
            assert!(t.end > t.start && t.end <= sql.len());
            at = t.end;
        }
        assert_eq!(at, sql.len());
    }
    if let Ok(statements) = split(sql, &o) {
        let mut at = 0;
        for s in &statements {
            assert!(s.range.start >= at && s.range.end <= sql.len(), "{s:?}");
            assert!(s.range.start <= s.range.end);
            at = s.range.end;
        }
        if let Some(last) = statements.iter().position(|s| s.compound) {
            assert_eq!(
                last,
                statements.len() - 1,
                "a compound statement ends the list"
            );
        }
    }
    if let Ok(exec) = executable_sql(sql, &o) {
        assert_eq!(exec.len(), sql.len());
        assert!(exec.iter().zip(sql).all(|(a, b)| a == b || *a == b' '));
    }
    let redacted = redact_literals(sql, &o);
    let _ = redacted.len();
    if let Some(fp) = fingerprint(sql, &o) {
        // Under any other settings the key is the same, or there is none.
        for flip in [1u8, 2, 4, 8, 16, 32, 64, 128, 0xFF] {
            let other = mode ^ flip;
            if let Some(fp2) = fingerprint(sql, &options(other)) {
                assert_eq!(fp, fp2, "settings {mode:#x} vs {other:#x}");
            }
        }
    }
});
