# PyMySQL (with cryptography: RSA-OAEP for caching_sha2 full
# authentication) against the caching_sha2 test double on argv[1], as user
# `app`. argv[2]: `tls` (verify against argv[3]'s CA, no host check) or
# `plain`. argv[4] (optional): a PEM public key the client has "cached"
# (server_public_key), so it encrypts without asking for a key.
# Connects with the right password, then a wrong one; prints JSON.
import json, ssl, sys
import pymysql

port, mode, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
cached = open(sys.argv[4], 'rb').read() if len(sys.argv) > 4 else None

def attempt(password):
    kw = {}
    if mode == 'tls':
        kw['ssl'] = {'ca': ca, 'check_hostname': False}
    if cached is not None:
        kw['server_public_key'] = cached
    try:
        c = pymysql.connect(host='127.0.0.1', port=port, user='app', password=password, **kw)
    except pymysql.MySQLError as e:
        return {'login': 'error', 'code': e.args[0], 'message': str(e.args[-1])}
    try:
        cur = c.cursor()
        cur.execute('SELECT 1')
        rows = [list(r) for r in cur.fetchall()]
        return {'login': 'ok', 'tls': isinstance(c._sock, ssl.SSLSocket), 'rows': rows}
    except pymysql.MySQLError as e:
        return {'login': 'ok', 'query_error': e.args[0], 'message': str(e.args[-1])}
    finally:
        c.close()

out = {'right': attempt('right pw: s3cret, longer than the 20-byte scramble')}
if cached is None:
    out['wrong'] = attempt('wrong pw')
print(json.dumps(out))
