"""The command line of model control."""

from triton_mlx.cli import config_from_args, serve_parser


def test_load_model_is_repeatable(tmp_path):
    args = serve_parser().parse_args([
        "--model-repository", str(tmp_path), "--model-control-mode", "explicit",
        "--load-model", "a", "--load-model", "b",
    ])
    config = config_from_args(args)
    assert config.model_control_mode == "explicit" and config.load_models == ("a", "b")
    assert config_from_args(
        serve_parser().parse_args(["--model-repository", str(tmp_path)])
    ).load_models == ()
