"""The config after Hydra composed it: its schema and validation (`schema`), its flattening into run params
with secrets redacted (`params`), and the refusal of credentials on command lines and in logs (`credentials`).
"""
