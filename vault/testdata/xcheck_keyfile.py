"""Independent check of the sealed key-file vector in vault/vectors_test.go.

Uses only hashlib.scrypt, a hand-written HChaCha20 (checked against
draft-irtf-cfrg-xchacha-03 section 2.2.1) and pyca/cryptography's
ChaCha20-Poly1305, so it shares no code with the Go implementation.
Run: python3 vault/testdata/xcheck_keyfile.py  (prints the vector's hex)
"""
import hashlib, struct
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

def rotl(v, c): return ((v << c) & 0xffffffff) | (v >> (32 - c))
def qr(s, a, b, c, d):
    s[a]=(s[a]+s[b])&0xffffffff; s[d]^=s[a]; s[d]=rotl(s[d],16)
    s[c]=(s[c]+s[d])&0xffffffff; s[b]^=s[c]; s[b]=rotl(s[b],12)
    s[a]=(s[a]+s[b])&0xffffffff; s[d]^=s[a]; s[d]=rotl(s[d],8)
    s[c]=(s[c]+s[d])&0xffffffff; s[b]^=s[c]; s[b]=rotl(s[b],7)
def hchacha20(key, nonce16):
    s = [0x61707865,0x3320646e,0x79622d32,0x6b206574] + list(struct.unpack('<8I', key)) + list(struct.unpack('<4I', nonce16))
    for _ in range(10):
        qr(s,0,4,8,12); qr(s,1,5,9,13); qr(s,2,6,10,14); qr(s,3,7,11,15)
        qr(s,0,5,10,15); qr(s,1,6,11,12); qr(s,2,7,8,13); qr(s,3,4,9,14)
    return struct.pack('<8I', *(s[0:4] + s[12:16]))

# HChaCha20 test vector, draft-irtf-cfrg-xchacha-03 section 2.2.1
k = bytes(range(32)); n = bytes.fromhex('000000090000004a0000000031415927')
assert hchacha20(k, n).hex() == '82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc'

def xseal(key, nonce24, pt, ad):
    sub = hchacha20(key, nonce24[:16])
    return ChaCha20Poly1305(sub).encrypt(b'\0'*4 + nonce24[16:], pt, ad)

hdr = b'OCKV\x01\x01\x01\x0a' + b'\xaa'*16 + b'\xbb'*24
kek = hashlib.scrypt(b'correct horse battery staple', salt=b'\xaa'*16, n=1<<10, r=8, p=1, dklen=32)
out = hdr + xseal(kek, b'\xbb'*24, bytes(range(1, 33)), hdr)
print(out.hex())
