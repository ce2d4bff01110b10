# Server-side cursors over the raw binary protocol, on a PyMySQL connection:
# COM_STMT_PREPARE, COM_STMT_EXECUTE with CURSOR_TYPE_READ_ONLY (the reply
# is the column definitions and an end packet flagged
# SERVER_STATUS_CURSOR_EXISTS, no rows), then COM_STMT_FETCH (0x1C,
# statement id u32, row count u32) for the rows, in binary. Prints JSON.
import json, struct, pymysql, sys
# argv[2] == 'deprecate_eof': the client asks CLIENT_DEPRECATE_EOF (no EOF
# after column blocks; OK-style end packets), which PyMySQL's own result
# parsing does not speak: then only the raw commands are used.
db = sys.argv[1]
deprecate_eof = len(sys.argv) > 2 and sys.argv[2] == 'deprecate_eof'
from pymysql.constants import CLIENT
flags = CLIENT.DEPRECATE_EOF if deprecate_eof else 0
c = pymysql.connect(host='127.0.0.1', port=3306, user='root', database=db, client_flag=flags)
CURSOR_EXISTS = 0x0040
LAST_ROW_SENT = 0x0080
def lenenc(b, i):
    f = b[i]
    if f < 0xfb: return f, i + 1
    if f == 0xfc: return struct.unpack_from('<H', b, i + 1)[0], i + 3
    if f == 0xfd: return int.from_bytes(b[i+1:i+4], 'little'), i + 4
    return struct.unpack_from('<Q', b, i + 1)[0], i + 9
def is_end(p):
    return p[0] == 0xfe and len(p) < 9
def end_status(p):
    # Classic EOF: 0xFE, warnings u16, status u16. (An OK-style end under
    # DEPRECATE_EOF: 0xFE, lenenc affected rows, lenenc insert id, status.)
    if len(p) == 5: return struct.unpack_from('<H', p, 3)[0]
    _, i = lenenc(p, 1); _, i = lenenc(p, i)
    return struct.unpack_from('<H', p, i)[0]
def prepare(sql):
    c._execute_command(0x16, sql)
    ok = c._read_packet().get_all_data()
    stmt, ncols, nparams = struct.unpack_from('<IHH', ok, 1)
    for _ in range(nparams): c._read_packet()
    if nparams and not deprecate_eof: c._read_packet()
    for _ in range(ncols): c._read_packet()
    if ncols and not deprecate_eof: c._read_packet()
    return stmt
def open_cursor(stmt):
    # flags CURSOR_TYPE_READ_ONLY (0x01), iteration count 1, no parameters.
    c._execute_command(0x17, struct.pack('<IBI', stmt, 0x01, 1))
    try:
        first = c._read_packet().get_all_data()
    except pymysql.MySQLError as e:
        return None, {'error': e.args[0], 'message': e.args[1]}
    n, _ = lenenc(first, 0)
    types = []
    for _ in range(n):
        d = c._read_packet().get_all_data()
        i = 0
        for _ in range(6):
            l, i = lenenc(d, i); i += l
        i += 1 + 2 + 4
        types.append(d[i])
    if deprecate_eof:
        # No EOF after the columns: either the cursor's end packet (with
        # CURSOR_EXISTS) or, without a cursor, the first row.
        end = c._read_packet().get_all_data()
        if not is_end(end):
            while not is_end(c._read_packet().get_all_data()): pass
            return types, {'columns': n, 'cursor_exists': False}
    else:
        end = c._read_packet().get_all_data()
    status = end_status(end)
    out = {'columns': n, 'cursor_exists': bool(status & CURSOR_EXISTS)}
    if not status & CURSOR_EXISTS:
        # No cursor: the rows follow here; drain them.
        while not is_end(c._read_packet().get_all_data()): pass
    return types, out
def row(p, types):
    n = len(types)
    nb = (n + 7 + 2) // 8
    bitmap = p[1:1+nb]; i = 1 + nb; r = []
    for k, t in enumerate(types):
        if bitmap[(k + 2) // 8] & (1 << ((k + 2) % 8)): r.append(None); continue
        if t == 3: r.append(struct.unpack_from('<i', p, i)[0]); i += 4
        elif t == 8: r.append(struct.unpack_from('<q', p, i)[0]); i += 8
        else:
            l, i = lenenc(p, i); r.append(p[i:i+l].decode(errors='replace')); i += l
    return r
def fetch(stmt, types, count):
    c._execute_command(0x1C, struct.pack('<II', stmt, count))
    rows = []
    while True:
        try:
            p = c._read_packet().get_all_data()
        except pymysql.MySQLError as e:
            return {'rows': rows, 'error': e.args[0], 'message': e.args[1]}
        if is_end(p):
            return {'rows': rows, 'last_row_sent': bool(end_status(p) & LAST_ROW_SENT)}
        rows.append(row(p, types))
def cursor(sql):
    stmt = prepare(sql)
    types, opened = open_cursor(stmt)
    if types is None:
        return {'open': opened}
    # One row, then the rest: two FETCHes of the same cursor.
    return {'open': opened, 'first': fetch(stmt, types, 1), 'rest': fetch(stmt, types, 10)}
out = {}
out['masked'] = cursor("SELECT ssn FROM cust ORDER BY id")
out['mixed'] = cursor("SELECT id, ssn, email FROM cust ORDER BY id")
out['derived'] = cursor("SELECT CONCAT(ssn, '') AS v FROM cust ORDER BY id")
# MariaDB's FETCH of 0xFFFFFFFF: the cursor of the statement prepared last.
stmt = prepare("SELECT ssn FROM cust ORDER BY id")
types, opened = open_cursor(stmt)
out['last_prepared'] = {'open': opened, 'first': fetch(0xFFFFFFFF, types, 1), 'rest': fetch(stmt, types, 10)}
out['plain'] = cursor("SELECT id, email FROM cust ORDER BY id")
out['other'] = cursor("SELECT note FROM other ORDER BY id")
# The session goes on: a query on the text protocol after the cursors.
if deprecate_eof:
    out['after'] = cursor("SELECT ssn FROM cust ORDER BY id")['rest']
else:
    cur = c.cursor(); cur.execute("SELECT ssn FROM cust ORDER BY id")
    out['after'] = {'rows': [list(r) for r in cur.fetchall()]}
print(json.dumps(out))
