import json, os, re, sys
sys.path.insert(0, __import__('os').path.dirname(__import__('os').path.abspath(__file__)))
from kp import h16
root = sys.argv[1]
bad = 0
for c in sorted(os.listdir(root)):
    d = os.path.join(root, c)
    if not os.path.isdir(d): continue
    R = open(os.path.join(d, 'restore.txt')).read().splitlines()
    E = json.load(open(os.path.join(d, 'expected.json')))
    for s in E['servicePorts']:
        n = s['name']; spn = f"{n['namespace']}/{n['name']}" + (f":{n['port_name']}" if 'port_name' in n else '')
        for key in ('clusterDispatch', 'localDispatch'):
            dsp = s.get(key)
            if not dsp: continue
            ch = dsp['chain']
            assert h16(spn + s['protocol']) == ch.split('-')[-1], (c, ch)
            rules = [r for r in R if r.startswith(f"-A {ch} ") and re.search(r'-j KUBE-SEP-', r) and '--rcheck' not in r]
            got = []
            for r in rules:
                m = re.search(r'--probability (\S+)', r)
                got.append((r.split('-j ')[-1], float(m.group(1)) if m else 1.0))
            want = [("KUBE-SEP-" + h16(spn + s['protocol'] + e['endpoint']), e['probability']) for e in dsp['endpoints']]
            if [g[0] for g in got] != [w[0] for w in want] or any(abs(a[1]-b[1]) > 1e-9 for a, b in zip(got, want)):
                print('MISMATCH', c, spn, key, got, want); bad += 1
        for e in s['endpoints']:
            es = f"[{e['ip']}]:{e['port']}" if ':' in e['ip'] else f"{e['ip']}:{e['port']}"
            sepc = "KUBE-SEP-" + h16(spn + s['protocol'] + es)
            if not any(r.startswith(f"-A {sepc} ") and r.endswith(f"--to-destination {es}") for r in R):
                print('NO SEP', c, spn, es); bad += 1
            if not any(r.startswith(f"-A {sepc} ") and f"-s {e['ip']} -j KUBE-MARK-MASQ" in r for r in R):
                print('NO HAIRPIN', c, spn, es); bad += 1
        # clusterIP appears in nat KUBE-SERVICES or a filter verdict
        cip = s['clusterIp']
        hits = [r for r in R if r.startswith('-A KUBE-SERVICES ') and f"-d {cip} --dport {s['port']} " in r and f"-p {s['protocol']}" in r]
        if not hits: print('NO CIP', c, spn); bad += 1
print('bad', bad)
