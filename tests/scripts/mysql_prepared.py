# Prepared statements over the raw binary protocol (COM_STMT_PREPARE /
# COM_STMT_EXECUTE, binary rows with the NULL bitmap), on a PyMySQL
# connection (PyMySQL itself only speaks the text protocol). Prints JSON.
import json, struct, pymysql, sys
db = sys.argv[1]
c = pymysql.connect(host='127.0.0.1', port=3306, user='root', database=db)
def lenenc(b, i):
    f = b[i]
    if f < 0xfb: return f, i + 1
    if f == 0xfc: return struct.unpack_from('<H', b, i + 1)[0], i + 3
    if f == 0xfd: return int.from_bytes(b[i+1:i+4], 'little'), i + 4
    return struct.unpack_from('<Q', b, i + 1)[0], i + 9
def prepare(sql):
    c._execute_command(0x16, sql)
    try:
        ok = c._read_packet().get_all_data()
    except pymysql.MySQLError as e:
        return None, '%s %s' % (e.args[0], e.args[1])
    stmt, ncols, nparams = struct.unpack_from('<IHH', ok, 1)
    for _ in range(nparams): c._read_packet()
    if nparams: c._read_packet()
    for _ in range(ncols): c._read_packet()
    if ncols: c._read_packet()
    return stmt, None
def execute(stmt):
    c._execute_command(0x17, struct.pack('<IBI', stmt, 0, 1))
    try:
        first = c._read_packet().get_all_data()
    except pymysql.MySQLError as e:
        return {'error': e.args[0], 'message': e.args[1]}
    n, _ = lenenc(first, 0)
    types = []
    for _ in range(n):
        d = c._read_packet().get_all_data()
        i = 0
        for _ in range(6):
            l, i = lenenc(d, i); i += l
        i += 1 + 2 + 4
        types.append(d[i])
    c._read_packet()  # EOF
    rows = []
    while True:
        try:
            p = c._read_packet().get_all_data()
        except pymysql.MySQLError as e:
            rows.append({'error': e.args[0]}); break
        if p[0] == 0xfe and len(p) < 9: break
        nb = (n + 7 + 2) // 8
        bitmap = p[1:1+nb]; i = 1 + nb; row = []
        for k, t in enumerate(types):
            if bitmap[(k + 2) // 8] & (1 << ((k + 2) % 8)): row.append(None); continue
            if t == 3: row.append(struct.unpack_from('<i', p, i)[0]); i += 4
            elif t == 8: row.append(struct.unpack_from('<q', p, i)[0]); i += 8
            else:
                l, i = lenenc(p, i); row.append(p[i:i+l].decode(errors='replace')); i += l
        rows.append(row)
    return {'rows': rows}
out = {}
s, err = prepare("SELECT id, ssn, email FROM cust ORDER BY id")
out['plain'] = execute(s) if s is not None else {'prepare_error': err}
out['again'] = execute(s) if s is not None else None
s, err = prepare("SELECT CONCAT(ssn, '') AS v, id FROM cust ORDER BY id")
out['derived'] = execute(s) if s is not None else {'prepare_error': err}
s, err = prepare("DELETE FROM other")
out['denied_prepare'] = {'prepared': s is not None, 'error': err}
out['after'] = execute(prepare("SELECT note FROM other ORDER BY id")[0])
print(json.dumps(out))
