# A fake MySQL server on argv[1] that greets properly, accepts any login,
# answers hoop's catalog queries with ERR, then answers the client's first
# query with a malformed column definition. The client (PyMySQL) connects
# to it, then to the real server on 3306 (database argv[2]); prints JSON.
import json, socket, struct, sys, threading
import pymysql

port, db = int(sys.argv[1]), sys.argv[2]
lsock = socket.socket(); lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lsock.bind(('127.0.0.1', port)); lsock.listen(4)

def packet(seq, payload):
    return struct.pack('<I', len(payload))[:3] + bytes([seq]) + payload

def read(s):
    h = b''
    while len(h) < 4:
        c = s.recv(4 - len(h))
        if not c: return None, None
        h += c
    n = h[0] | h[1] << 8 | h[2] << 16
    body = b''
    while len(body) < n:
        c = s.recv(n - len(body))
        if not c: return None, None
        body += c
    return h[3], body

def serve():
    s, _ = lsock.accept()
    caps = 0x0002A20F | 0x00080000 | (1 << 9) | (1 << 15)  # PROTOCOL_41, SECURE_CONNECTION, PLUGIN_AUTH
    greeting = (bytes([10]) + b'5.5.5-10.11.19-fake\0' + struct.pack('<I', 7) + b'abcdefgh\0'
                + struct.pack('<H', caps & 0xffff) + bytes([45]) + struct.pack('<H', 2)
                + struct.pack('<H', caps >> 16) + bytes([21]) + bytes(10) + b'ijklmnopqrst\0'
                + b'mysql_native_password\0')
    s.sendall(packet(0, greeting))
    seq, _ = read(s)
    s.sendall(packet(seq + 1, b'\x00\x00\x00\x02\x00\x00\x00'))
    while True:
        seq, body = read(s)
        if body is None: return
        if b'information_schema' in body:
            s.sendall(packet(1, b'\xff\x7a\x04#42000no catalog here'))
            continue
        if b'SELECT 1' not in body:
            # PyMySQL's own SET AUTOCOMMIT at connect.
            s.sendall(packet(1, b'\x00\x00\x00\x02\x00\x00\x00'))
            continue
        # One column, then a column definition cut short.
        s.sendall(packet(1, b'\x01') + packet(2, b'\x03def\x02db'))
        s.recv(100)
        return

threading.Thread(target=serve, daemon=True).start()
out = {}
try:
    c = pymysql.connect(host='127.0.0.1', port=port, user='root', password='x', database='x')
    out['login'] = 'ok'
    try:
        cur = c.cursor(); cur.execute('SELECT 1'); out['query'] = cur.fetchall()
    except pymysql.MySQLError as e:
        out['query'] = {'error': e.args[0], 'message': str(e.args[1]) if len(e.args) > 1 else ''}
except pymysql.MySQLError as e:
    out['login'] = {'error': e.args[0], 'message': str(e.args[1]) if len(e.args) > 1 else ''}
c2 = pymysql.connect(host='127.0.0.1', port=3306, user='root', database=db)
cur = c2.cursor(); cur.execute('SELECT note FROM other ORDER BY id')
out['after'] = [list(r) for r in cur.fetchall()]
print(json.dumps(out))
