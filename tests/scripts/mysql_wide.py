# Values sent in a character set whose ASCII is not ASCII bytes (ucs2,
# utf16, utf16le, utf32): `character_set_results` set to one of them, or set
# to NULL and the value converted (`CONVERT(x USING utf16)`), or a column
# stored in one. Text rows through PyMySQL with use_unicode=False (the raw
# bytes), binary rows over the raw COM_STMT_PREPARE/EXECUTE. Each value is
# decoded here with the codec its column's collation names, so a leak shows
# as the plain text. Prints JSON: case -> list of decoded values (or an
# error), plus the raw bytes of the column-masked case, hex.
import json, struct, sys, pymysql
db = sys.argv[1]
c = pymysql.connect(host='127.0.0.1', port=3306, user='root', database=db, use_unicode=False)
CODECS = {35: 'utf-16-be', 54: 'utf-16-be', 56: 'utf-16-le', 60: 'utf-32-be', 101: 'utf-16-be',
          128: 'utf-16-be', 160: 'utf-32-be', 45: 'utf-8', 46: 'utf-8', 33: 'utf-8', 63: 'utf-8', 8: 'latin-1'}
def codec(charsetnr):
    return CODECS.get(charsetnr, 'utf-8')
def filename_decode(b):
    # MariaDB's `filename` set (collation 17): `@` and four hex digits.
    out, i = '', 0
    while i < len(b):
        if b[i:i+1] == b'@':
            out += chr(int(b[i+1:i+5], 16)); i += 5
        else:
            out += chr(b[i]); i += 1
    return out
def decode(v, nr):
    return filename_decode(v) if nr == 17 else v.decode(codec(nr), errors='replace')
def text_case(setup, sql):
    cur = c.cursor()
    try:
        for s in setup:
            cur.execute(s)
        cur.execute(sql)
        rows = cur.fetchall()
        nr = cur._result.fields[0].charsetnr
        raw = [r[0] for r in rows]
        return {'charset': nr, 'values': [decode(v, nr) for v in raw],
                'hex': [v.hex() for v in raw]}
    except pymysql.MySQLError as e:
        return {'error': e.args[0], 'message': str(e.args[1])}
    finally:
        cur.execute('SET character_set_results = utf8mb4')
def lenenc(b, i):
    f = b[i]
    if f < 0xfb: return f, i + 1
    if f == 0xfc: return struct.unpack_from('<H', b, i + 1)[0], i + 3
    if f == 0xfd: return int.from_bytes(b[i+1:i+4], 'little'), i + 4
    return struct.unpack_from('<Q', b, i + 1)[0], i + 9
def binary_case(setup, sql):
    cur = c.cursor()
    for s in setup:
        cur.execute(s)
    try:
        c._execute_command(0x16, sql)
        try:
            ok = c._read_packet().get_all_data()
        except pymysql.MySQLError as e:
            return {'error': e.args[0], 'message': str(e.args[1])}
        stmt, ncols, nparams = struct.unpack_from('<IHH', ok, 1)
        for _ in range(nparams): c._read_packet()
        if nparams: c._read_packet()
        for _ in range(ncols): c._read_packet()
        if ncols: c._read_packet()
        c._execute_command(0x17, struct.pack('<IBI', stmt, 0, 1))
        try:
            first = c._read_packet().get_all_data()
        except pymysql.MySQLError as e:
            return {'error': e.args[0], 'message': str(e.args[1])}
        n, _ = lenenc(first, 0)
        charsets = []
        for _ in range(n):
            d = c._read_packet().get_all_data()
            i = 0
            for _ in range(6):
                l, i = lenenc(d, i); i += l
            i += 1
            charsets.append(struct.unpack_from('<H', d, i)[0])
        c._read_packet()  # EOF
        values = []
        while True:
            p = c._read_packet().get_all_data()
            if p[0] == 0xfe and len(p) < 9: break
            nb = (n + 7 + 2) // 8
            i = 1 + nb
            l, i = lenenc(p, i)
            values.append(decode(p[i:i+l], charsets[0]))
        c._execute_command(0x19, struct.pack('<I', stmt))
        return {'charset': charsets[0], 'values': values}
    finally:
        cur.execute('SET character_set_results = utf8mb4')
NULL = ['SET character_set_results = NULL']
CASES = {
    'convert_filename': lambda: text_case(NULL, 'SELECT CONVERT(note USING filename) FROM people ORDER BY id'),
    'results_filename': lambda: text_case(['SET character_set_results = filename'], 'SELECT note FROM people ORDER BY id'),
    'convert_utf16': lambda: text_case(NULL, 'SELECT CONVERT(note USING utf16) FROM people ORDER BY id'),
    'convert_utf16le': lambda: text_case(NULL, 'SELECT CONVERT(note USING utf16le) FROM people ORDER BY id'),
    'convert_ucs2': lambda: text_case(NULL, 'SELECT CONVERT(note USING ucs2) FROM people ORDER BY id'),
    'convert_utf32': lambda: text_case(NULL, 'SELECT CONVERT(note USING utf32) FROM people ORDER BY id'),
    'results_utf16': lambda: text_case(['SET character_set_results = utf16'], 'SELECT note FROM people ORDER BY id'),
    'results_utf32': lambda: text_case(['SET character_set_results = utf32'], 'SELECT note FROM people ORDER BY id'),
    'stored_utf16': lambda: text_case(NULL, 'SELECT wnote FROM people ORDER BY id'),
    'masked_column_utf16': lambda: text_case(['SET character_set_results = utf16'], 'SELECT ssn FROM people ORDER BY id'),
    # A DDL statement makes hoop read its catalog again, under utf16.
    'view_after_ddl_utf16': lambda: text_case(['SET character_set_results = utf16', 'CREATE TABLE scratch (a INT)'],
                                      'SELECT s FROM v_people ORDER BY id'),
    'innocent_utf16': lambda: text_case(['SET character_set_results = utf16'], "SELECT 'nothing to see, café 12' AS x"),
    'binary_convert_utf16': lambda: binary_case(NULL, 'SELECT CONVERT(note USING utf16) FROM people ORDER BY id'),
    'binary_results_utf32': lambda: binary_case(['SET character_set_results = utf32'], 'SELECT note FROM people ORDER BY id'),
    'binary_convert_filename': lambda: binary_case(NULL, 'SELECT CONVERT(note USING filename) FROM people ORDER BY id'),
    'binary_innocent_utf16le': lambda: binary_case(NULL, "SELECT CONVERT('plain words' USING utf16le)"),
}
# One case (argv[2]) or all: a detector's find in a column masks that column
# whole afterwards in the same hoop (a promotion), so the test runs each case
# in a hoop of its own.
names = sys.argv[2:] or list(CASES)
out = {name: CASES[name]() for name in names}
print(json.dumps(out))
