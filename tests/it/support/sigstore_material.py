#!/usr/bin/env python3
"""Trust material for occy's provenance tests, made per the specs and
without occy's code (pyca/cryptography, which sigstore-python itself uses):

- a Fulcio-like CA (P-384 root and intermediate) and a rogue CA that is not
  in the trusted root; a CT log key (SCTs embedded in the leaf certificates,
  RFC 6962 precertificate form) and a Rekor-like log key;
- `trusted_root.json` in sigstore's published format, and the
  ClientTrustConfig that `sigstore --trust-config` reads;
- sigstore bundles (v0.1, v0.2, v0.3): a DSSE envelope of an in-toto
  statement (predicateType https://sigstore.dev/cosign/sign/v1) signed by a
  10-minute Fulcio-like leaf (email or URI SAN, OIDC issuer in extensions
  1.3.6.1.4.1.57264.1.1 and .1.8), its dsse/0.0.1 Rekor entry, the signed
  entry timestamp over the canonical entry, and a Merkle inclusion proof
  with a signed checkpoint;
- cosign v2 keyless `.sig` layers (simple-signing payload, certificate,
  chain and Rekor bundle annotations, hashedrekord/0.0.1 entry);
- Notation JWS envelopes signed by a test CA, with trust store and policy.

Usage:
  sigstore_material.py init DIR
  sigstore_material.py bundle DIR OUT --digest D [--identity I] [--issuer U]
      [--ca trusted|rogue] [--version 0.1|0.2|0.3] [--no-tlog] [--tamper]
  sigstore_material.py sig DIR OUT --digest D --reference R [--identity I] [--issuer U]
  sigstore_material.py notation DIR OUT --digest D --size N --media-type M [--ca trusted|rogue]
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import struct
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
SCT_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
LOG_ORIGIN = "rekor.example.test - 2605736670972794746"
INTOTO = "application/vnd.in-toto+json"


def b64(b):
    return base64.b64encode(b).decode()


def b64url(b):
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def canonical(obj):
    # RFC 8785 for the objects used here: sorted keys, no whitespace,
    # strings and integers only.
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def der_len(n):
    if n < 0x80:
        return bytes([n])
    out = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(out)]) + out


def der_octets(b):
    return b"\x04" + der_len(len(b)) + b


def der_utf8(s):
    b = s.encode()
    return b"\x0c" + der_len(len(b)) + b


def spki(key):
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id(key):
    return hashlib.sha256(spki(key)).digest()


def save_key(path, key):
    with open(path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def load_key(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), None)


def load_cert(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def save_cert(path, cert):
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def name(cn, org="example.test"):
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def ca_cert(subject, key, issuer_name, issuer_key, path_len, days_before=1, days_after=365):
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=days_before))
        .not_valid_after(NOW + datetime.timedelta(days=days_after))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_len), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    )
    algo = hashes.SHA384() if isinstance(issuer_key.curve, ec.SECP384R1) else hashes.SHA256()
    return b.sign(issuer_key, algo)


def public_key_entry(key, start):
    return {
        "rawBytes": b64(spki(key)),
        "keyDetails": "PKIX_ECDSA_P256_SHA_256",
        "validFor": {"start": start},
    }


def init(d):
    os.makedirs(d, exist_ok=True)
    start = (NOW - datetime.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    keys = {}
    for n, curve in [
        ("root", ec.SECP384R1()),
        ("intermediate", ec.SECP384R1()),
        ("rogue-root", ec.SECP256R1()),
        ("rogue-intermediate", ec.SECP256R1()),
        ("rekor", ec.SECP256R1()),
        ("ctlog", ec.SECP256R1()),
        ("notation-root", ec.SECP256R1()),
        ("notation-rogue", ec.SECP256R1()),
    ]:
        keys[n] = ec.generate_private_key(curve)
        save_key(os.path.join(d, n + ".key"), keys[n])
    root = ca_cert(name("sigstore-test-root"), keys["root"], name("sigstore-test-root"), keys["root"], 1)
    inter = ca_cert(name("sigstore-test-intermediate"), keys["intermediate"], root.subject, keys["root"], 0)
    # The rogue CA uses the same names: only the signatures tell them apart.
    rroot = ca_cert(root.subject, keys["rogue-root"], root.subject, keys["rogue-root"], 1)
    rinter = ca_cert(inter.subject, keys["rogue-intermediate"], rroot.subject, keys["rogue-root"], 0)
    for n, c in [("root", root), ("intermediate", inter), ("rogue-root", rroot), ("rogue-intermediate", rinter)]:
        save_cert(os.path.join(d, n + ".pem"), c)
    trusted_root = {
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [
            {
                "baseUrl": "https://rekor.example.test",
                "hashAlgorithm": "SHA2_256",
                "publicKey": public_key_entry(keys["rekor"], start),
                "logId": {"keyId": b64(key_id(keys["rekor"]))},
            }
        ],
        "certificateAuthorities": [
            {
                "subject": {"organization": "example.test", "commonName": "sigstore-test"},
                "uri": "https://fulcio.example.test",
                "certChain": {
                    "certificates": [
                        {"rawBytes": b64(inter.public_bytes(serialization.Encoding.DER))},
                        {"rawBytes": b64(root.public_bytes(serialization.Encoding.DER))},
                    ]
                },
                "validFor": {"start": start},
            }
        ],
        "ctlogs": [
            {
                "baseUrl": "https://ctfe.example.test",
                "hashAlgorithm": "SHA2_256",
                "publicKey": public_key_entry(keys["ctlog"], start),
                "logId": {"keyId": b64(key_id(keys["ctlog"]))},
            }
        ],
        "timestampAuthorities": [],
    }
    with open(os.path.join(d, "trusted_root.json"), "w") as f:
        json.dump(trusted_root, f, indent=2)
    service = lambda url: {
        "url": url,
        "majorApiVersion": 1,
        "validFor": {"start": start},
        "operator": "example.test",
    }
    trust_config = {
        "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
        "trustedRoot": trusted_root,
        "signingConfig": {
            "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
            "caUrls": [service("https://fulcio.example.test")],
            "oidcUrls": [service("https://issuer.example.test")],
            "rekorTlogUrls": [service("https://rekor.example.test")],
            "tsaUrls": [],
            "rekorTlogConfig": {"selector": "ANY"},
            "tsaConfig": {"selector": "ANY"},
        },
    }
    with open(os.path.join(d, "trust_config.json"), "w") as f:
        json.dump(trust_config, f, indent=2)
    init_notation(d, keys)


def init_notation(d, keys):
    """A Notation test CA in a trust store (`DIR/notation/truststore/x509/ca/releases/`),
    a rogue CA with the same name outside it, and a strict trust policy."""
    subj = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Releases"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Example Releases CA"),
        ]
    )
    ca = ca_cert(subj, keys["notation-root"], subj, keys["notation-root"], 0)
    rogue = ca_cert(subj, keys["notation-rogue"], subj, keys["notation-rogue"], 0)
    save_cert(os.path.join(d, "notation-root.pem"), ca)
    save_cert(os.path.join(d, "notation-rogue.pem"), rogue)
    store = os.path.join(d, "notation", "truststore", "x509", "ca", "releases")
    os.makedirs(store, exist_ok=True)
    save_cert(os.path.join(store, "releases-ca.crt"), ca)
    policy = {
        "version": "1.0",
        "trustPolicies": [
            {
                "name": "releases",
                "registryScopes": ["*"],
                "signatureVerification": {"level": "strict"},
                "trustStores": ["ca:releases"],
                "trustedIdentities": [
                    "x509.subject: C=US, O=Example Releases, CN=release-signer"
                ],
            }
        ],
    }
    with open(os.path.join(d, "notation", "trustpolicy.json"), "w") as f:
        json.dump(policy, f, indent=2)


def leaf_builder(identity, issuer, pub, issuer_cert, not_before, serial):
    san = (
        x509.UniformResourceIdentifier(identity)
        if "://" in identity
        else x509.RFC822Name(identity)
    )
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer_cert.subject)
        .public_key(pub)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_before + datetime.timedelta(minutes=10))
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()), critical=False
        )
        .add_extension(x509.SubjectAlternativeName([san]), critical=True)
        .add_extension(x509.UnrecognizedExtension(ISSUER_V1, issuer.encode()), critical=False)
        .add_extension(x509.UnrecognizedExtension(ISSUER_V2, der_utf8(issuer)), critical=False)
    )


def issue_leaf(d, identity, issuer, which_ca, not_before):
    """A Fulcio-like leaf with an embedded SCT (RFC 6962 precertificate
    entry over the TBS without the SCT extension). Returns (leaf key, leaf
    certificate, [intermediate, root])."""
    prefix = "" if which_ca == "trusted" else "rogue-"
    ca_key = load_key(os.path.join(d, prefix + "intermediate.key"))
    ca = load_cert(os.path.join(d, prefix + "intermediate.pem"))
    root = load_cert(os.path.join(d, prefix + "root.pem"))
    ct = load_key(os.path.join(d, "ctlog.key"))
    key = ec.generate_private_key(ec.SECP256R1())
    serial = x509.random_serial_number()
    b = leaf_builder(identity, issuer, key.public_key(), ca, not_before, serial)
    pre = b.sign(ca_key, hashes.SHA384())
    tbs = pre.tbs_certificate_bytes
    ts = int(not_before.timestamp() * 1000)
    issuer_key_hash = hashlib.sha256(
        ca.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).digest()
    signed = (
        struct.pack("!BBQH", 0, 0, ts, 1)
        + issuer_key_hash
        + len(tbs).to_bytes(3, "big")
        + tbs
        + struct.pack("!H", 0)
    )
    sig = ct.sign(signed, ec.ECDSA(hashes.SHA256()))
    sct = (
        bytes([0])
        + key_id(ct)
        + struct.pack("!Q", ts)
        + struct.pack("!H", 0)
        + bytes([4, 3])
        + struct.pack("!H", len(sig))
        + sig
    )
    sct_list = struct.pack("!H", len(sct) + 2) + struct.pack("!H", len(sct)) + sct
    cert = b.add_extension(
        x509.UnrecognizedExtension(SCT_OID, der_octets(sct_list)), critical=False
    ).sign(ca_key, hashes.SHA384())
    assert cert.tbs_precertificate_bytes == tbs, "precertificate TBS differs"
    return key, cert, [ca, root]


def merkle_leaf(b):
    return hashlib.sha256(b"\x00" + b).digest()


def merkle_node(l, r):
    return hashlib.sha256(b"\x01" + l + r).digest()


def merkle_root(leaves):
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return merkle_node(merkle_root(leaves[:k]), merkle_root(leaves[k:]))


def merkle_path(index, leaves):
    """RFC 6962 audit path, lowest level first."""
    if len(leaves) == 1:
        return []
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if index < k:
        return merkle_path(index, leaves[:k]) + [merkle_root(leaves[k:])]
    return merkle_path(index - k, leaves[k:]) + [merkle_root(leaves[:k])]


def log_entry(d, body, integrated_time, proof):
    """A Rekor v1 transparency log entry for `body`: logged at index 3 of a
    tree of 6, with a signed entry timestamp and an inclusion proof against
    a signed checkpoint (`proof`: which of these to keep)."""
    rekor = load_key(os.path.join(d, "rekor.key"))
    log_id = key_id(rekor)
    index = 3
    leaves = [merkle_leaf(b"other entry %d" % i) for i in range(6)]
    leaves[index] = merkle_leaf(body)
    root = merkle_root(leaves)
    path = merkle_path(index, leaves)
    set_payload = canonical(
        {
            "body": b64(body),
            "integratedTime": integrated_time,
            "logID": log_id.hex(),
            "logIndex": index,
        }
    )
    set_sig = rekor.sign(set_payload, ec.ECDSA(hashes.SHA256()))
    note = "%s\n%d\n%s\n" % (LOG_ORIGIN, len(leaves), b64(root))
    note_sig = rekor.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
    checkpoint = note + "\n\u2014 rekor.example.test " + b64(log_id[:4] + note_sig) + "\n"
    entry = {
        "logIndex": str(index),
        "logId": {"keyId": b64(log_id)},
        "kindVersion": {"kind": json.loads(body)["kind"], "version": "0.0.1"},
        "integratedTime": str(integrated_time),
        "canonicalizedBody": b64(body),
    }
    if "set" in proof:
        entry["inclusionPromise"] = {"signedEntryTimestamp": b64(set_sig)}
    if "inclusion" in proof:
        entry["inclusionProof"] = {
            "logIndex": str(index),
            "rootHash": b64(root),
            "treeSize": str(len(leaves)),
            "hashes": [b64(h) for h in path],
            "checkpoint": {"envelope": checkpoint},
        }
    return entry, set_sig, log_id


def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def bundle(args):
    d = args.dir
    not_before = NOW - datetime.timedelta(minutes=60)
    integrated = int((not_before + datetime.timedelta(minutes=5)).timestamp())
    key, cert, chain = issue_leaf(d, args.identity, args.issuer, args.ca, not_before)
    algo, hexd = args.digest.split(":", 1)
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": args.name, "digest": {algo: hexd}}],
        "predicateType": "https://sigstore.dev/cosign/sign/v1",
        "predicate": {},
    }
    payload = json.dumps(statement, separators=(",", ":")).encode()
    pae = b"DSSEv1 %d %s %d %s" % (len(INTOTO), INTOTO.encode(), len(payload), payload)
    sig = key.sign(pae, ec.ECDSA(hashes.SHA256()))
    envelope = {"payload": b64(payload), "payloadType": INTOTO, "signatures": [{"sig": b64(sig)}]}
    if args.tamper:
        # The statement changed after signing (another digest, same signature).
        statement["subject"][0]["digest"][algo] = hashlib.sha256(b"tampered").hexdigest()
        envelope["payload"] = b64(json.dumps(statement, separators=(",", ":")).encode())
    body = canonical(
        {
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {
                "envelopeHash": {
                    "algorithm": "sha256",
                    "value": hashlib.sha256(canonical(envelope)).hexdigest(),
                },
                "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
                "signatures": [{"signature": b64(sig), "verifier": b64(pem(cert))}],
            },
        }
    )
    entry, _, _ = log_entry(d, body, integrated, "set+inclusion")
    der = lambda c: {"rawBytes": b64(c.public_bytes(serialization.Encoding.DER))}
    if args.version == "0.3":
        material = {"certificate": der(cert)}
    else:
        material = {"x509CertificateChain": {"certificates": [der(cert)]}}
    material["tlogEntries"] = [] if args.no_tlog else [entry]
    out = {
        "mediaType": "application/vnd.dev.sigstore.bundle.v%s+json" % args.version
        if args.version == "0.3"
        else "application/vnd.dev.sigstore.bundle+json;version=%s" % args.version,
        "verificationMaterial": material,
        "dsseEnvelope": envelope,
    }
    with open(args.out, "w") as f:
        json.dump(out, f)


def sig(args):
    """cosign v2 keyless `.sig` layer material: OUT/payload,
    OUT/annotations.json (signature, certificate, chain, bundle)."""
    d = args.dir
    not_before = NOW - datetime.timedelta(minutes=60)
    integrated = int((not_before + datetime.timedelta(minutes=5)).timestamp())
    key, cert, chain = issue_leaf(d, args.identity, args.issuer, args.ca, not_before)
    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": args.reference},
                "image": {"docker-manifest-digest": args.digest},
                "type": "cosign container image signature",
            },
            "optional": None,
        },
        separators=(",", ":"),
    ).encode()
    signature = key.sign(payload, ec.ECDSA(hashes.SHA256()))
    body = canonical(
        {
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}},
                "signature": {"content": b64(signature), "publicKey": {"content": b64(pem(cert))}},
            },
        }
    )
    _, set_sig, log_id = log_entry(d, body, integrated, "set")
    annotations = {
        "dev.cosignproject.cosign/signature": b64(signature),
        "dev.sigstore.cosign/certificate": pem(cert).decode(),
        "dev.sigstore.cosign/chain": b"".join(pem(c) for c in chain).decode(),
        "dev.sigstore.cosign/bundle": json.dumps(
            {
                "SignedEntryTimestamp": b64(set_sig),
                "Payload": {
                    "body": b64(body),
                    "integratedTime": integrated,
                    "logIndex": 3,
                    "logID": log_id.hex(),
                },
            },
            separators=(",", ":"),
        ),
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "payload"), "wb") as f:
        f.write(payload)
    with open(os.path.join(args.out, "annotations.json"), "w") as f:
        json.dump(annotations, f)


def notation(args):
    """A Notation JWS envelope (notary.x509 signing scheme, ES256) for the
    descriptor given, signed by a leaf of the test CA (or the rogue one)."""
    d = args.dir
    prefix = "notation-root" if args.ca == "trusted" else "notation-rogue"
    ca_key = load_key(os.path.join(d, prefix + ".key"))
    ca = load_cert(os.path.join(d, prefix + ".pem"))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Releases"),
            x509.NameAttribute(NameOID.COMMON_NAME, args.cn),
        ]
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(hours=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    payload = json.dumps(
        {
            "targetArtifact": {
                "mediaType": args.media_type,
                "digest": args.digest,
                "size": args.size,
            }
        },
        separators=(",", ":"),
    ).encode()
    protected = json.dumps(
        {
            "alg": "ES256",
            "crit": ["io.cncf.notary.signingScheme"],
            "cty": "application/vnd.cncf.notary.payload.v1+json",
            "io.cncf.notary.signingScheme": "notary.x509",
            "io.cncf.notary.signingTime": (NOW - datetime.timedelta(minutes=5)).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
        },
        separators=(",", ":"),
    ).encode()
    signing_input = (b64url(protected) + "." + b64url(payload)).encode()
    der_sig = key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(der_sig)
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    envelope = {
        "payload": b64url(payload),
        "protected": b64url(protected),
        "header": {
            "x5c": [
                b64(leaf.public_bytes(serialization.Encoding.DER)),
                b64(ca.public_bytes(serialization.Encoding.DER)),
            ]
        },
        "signature": b64url(raw),
    }
    if args.tamper:
        other = json.loads(payload)
        other["targetArtifact"]["size"] = args.size + 1
        envelope["payload"] = b64url(json.dumps(other, separators=(",", ":")).encode())
    thumbprints = [
        hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest() for c in (leaf, ca)
    ]
    with open(args.out, "w") as f:
        json.dump(envelope, f)
    with open(args.out + ".thumbprints", "w") as f:
        json.dump(thumbprints, f)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init")
    i.add_argument("dir")
    b = sub.add_parser("bundle")
    b.add_argument("dir")
    b.add_argument("out")
    b.add_argument("--digest", required=True)
    b.add_argument("--name", default="image")
    b.add_argument("--identity", default="alice@example.test")
    b.add_argument("--issuer", default="https://issuer.example.test")
    b.add_argument("--ca", default="trusted", choices=["trusted", "rogue"])
    b.add_argument("--version", default="0.3", choices=["0.1", "0.2", "0.3"])
    b.add_argument("--no-tlog", action="store_true")
    b.add_argument("--tamper", action="store_true")
    s = sub.add_parser("sig")
    s.add_argument("dir")
    s.add_argument("out")
    s.add_argument("--digest", required=True)
    s.add_argument("--reference", required=True)
    s.add_argument("--identity", default="alice@example.test")
    s.add_argument("--issuer", default="https://issuer.example.test")
    s.add_argument("--ca", default="trusted", choices=["trusted", "rogue"])
    n = sub.add_parser("notation")
    n.add_argument("dir")
    n.add_argument("out")
    n.add_argument("--digest", required=True)
    n.add_argument("--size", type=int, required=True)
    n.add_argument("--media-type", required=True)
    n.add_argument("--ca", default="trusted", choices=["trusted", "rogue"])
    n.add_argument("--cn", default="release-signer")
    n.add_argument("--tamper", action="store_true")
    args = p.parse_args()
    {"init": lambda: init(args.dir), "bundle": lambda: bundle(args), "sig": lambda: sig(args), "notation": lambda: notation(args)}[
        args.cmd
    ]()


if __name__ == "__main__":
    sys.exit(main())
