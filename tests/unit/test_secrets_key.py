"""SECRETS_KEY: parsed and checked at start, never repeated in an error; a
key generated into the data directory when it is unset."""
import stat

import pytest
from cryptography.fernet import Fernet

from app.config import ConfigError, load_settings, secrets_keys_for
from app.secret_box import SecretBox, SecretUnreadable, generate_key, looks_encrypted

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()


@pytest.mark.parametrize("value, which", [
    ("not-a-key", "the value given is not a Fernet key"),
    ("c2hvcnQ=", "the value given is not a Fernet key"),
    (KEY_A + ",", "key 2 of 2 is empty"),
    (f"{KEY_A},{KEY_B[:-2]}", "key 2 of 2 is not a Fernet key"),
    (f"{KEY_A} , {KEY_B}, oops", "key 3 of 3 is not a Fernet key"),
])
def test_it_names_the_variable_for_a_bad_key_and_never_repeats_it(value, which):
    with pytest.raises(ConfigError) as caught:
        load_settings({"SECRETS_KEY": value})
    message = str(caught.value)
    assert message.startswith("SECRETS_KEY must be one or more Fernet keys") and which in message
    for part in value.split(","):
        if part.strip():
            assert part.strip() not in message


def test_it_takes_several_keys_the_first_encrypting(tmp_path):
    settings = load_settings({"SECRETS_KEY": f" {KEY_A} ,{KEY_B}", "DATA_DIR": str(tmp_path)})
    keys, source = secrets_keys_for(settings)
    assert keys == (KEY_A, KEY_B) and source == "SECRETS_KEY"
    token = SecretBox(keys, source).encrypt("s3cret")
    assert Fernet(KEY_A).decrypt(token.encode()) == b"s3cret"
    assert not (tmp_path / "secrets_key").exists()  # nothing generated when the variable is set


def test_without_the_variable_a_key_is_generated_once_into_the_data_directory(tmp_path):
    settings = load_settings({"DATA_DIR": str(tmp_path)})
    keys, source = secrets_keys_for(settings)
    path = tmp_path / "secrets_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys == (path.read_text(),) and str(path) in source and "SECRETS_KEY" in source
    Fernet(keys[0])  # a valid key
    assert secrets_keys_for(settings) == (keys, source)  # reused, not replaced


def test_a_damaged_key_file_stops_the_start_naming_the_file(tmp_path):
    (tmp_path / "secrets_key").write_text("garbage")
    with pytest.raises(ConfigError, match="the key file .*secrets_key must hold one or more Fernet keys"):
        secrets_keys_for(load_settings({"DATA_DIR": str(tmp_path)}))


def test_a_token_under_another_key_is_an_error_naming_the_source_not_garbage():
    token = SecretBox([KEY_A], "SECRETS_KEY").encrypt("s3cret")
    assert looks_encrypted(token)
    with pytest.raises(SecretUnreadable, match="cannot be decrypted with SECRETS_KEY"):
        SecretBox([KEY_B], "SECRETS_KEY").decrypt(token)
    # Rotation: a box holding both keys reads it, and re-encrypts it under its first.
    both = SecretBox([KEY_B, KEY_A], "SECRETS_KEY")
    rotated = both.rotate(token)
    assert SecretBox([KEY_B], "SECRETS_KEY").decrypt(rotated) == "s3cret"


@pytest.mark.parametrize("value", ["s3cret", "Bearer abc", "", "gAAAAA", "x" * 120, generate_key()])
def test_plain_values_are_not_taken_for_tokens(value):
    assert not looks_encrypted(value)
