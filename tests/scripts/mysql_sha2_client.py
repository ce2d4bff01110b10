# PyMySQL (with cryptography: RSA-OAEP for caching_sha2 full
# authentication) against the caching_sha2 test double on argv[1], as user
# `app`. argv[2]: `tls` (verify against argv[3]'s CA, no host check) or
# `plain`. Options: `--cached PEM`: a public key the client has "cached"
# (server_public_key), so it encrypts without asking for a key (only the
# right password is tried); `--change-user`: after the login, COM_CHANGE_USER
# to the same user (PyMySQL has no API for it: sent by hand).
# Connects with the right password, then a wrong one; prints JSON.
import json, ssl, struct, sys
import pymysql
from pymysql import _auth
from pymysql.constants import COMMAND

port, mode, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rest = sys.argv[4:]
cached = open(rest[rest.index('--cached') + 1], 'rb').read() if '--cached' in rest else None
change_user = '--change-user' in rest
PASSWORD = 'right pw: s3cret, longer than the 20-byte scramble'

def change(c):
    pw = PASSWORD.encode()
    scrambled = _auth.scramble_caching_sha2(pw, c.salt)
    payload = (b'app\0' + bytes([len(scrambled)]) + scrambled + b'\0'
               + struct.pack('<H', 45) + b'caching_sha2_password\0')
    try:
        c._execute_command(COMMAND.COM_CHANGE_USER, payload)
        pkt = c._read_packet()
        # Full authentication: on a TLS leg the password goes in clear,
        # else RSA-encrypted under the key asked for.
        if pkt.is_extra_auth_data() and pkt._data[1:2] == b'\x04':
            if c._secure:
                c.write_packet(pw + b'\0')
            else:
                c.write_packet(b'\x02')
                key = c._read_packet()._data[1:]
                c.write_packet(_auth.sha2_rsa_encrypt(pw, c.salt, key))
            c._read_packet()
        cur = c.cursor()
        cur.execute('SELECT 1')
        return {'changed': 'ok', 'rows': [list(r) for r in cur.fetchall()]}
    except pymysql.MySQLError as e:
        return {'changed': 'error', 'code': e.args[0], 'message': str(e.args[-1])}

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
        out = {'login': 'ok', 'tls': isinstance(c._sock, ssl.SSLSocket), 'rows': rows}
        if change_user:
            out['change_user'] = change(c)
        return out
    except pymysql.MySQLError as e:
        return {'login': 'ok', 'query_error': e.args[0], 'message': str(e.args[-1])}
    finally:
        try:
            c.close()
        except Exception:
            pass

out = {'right': attempt(PASSWORD)}
if cached is None:
    out['wrong'] = attempt('wrong pw')
print(json.dumps(out))
