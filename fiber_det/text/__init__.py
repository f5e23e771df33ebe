from .prompts import build_caption, clean_name, positive_map_from_spans, spans_to_token_range

__all__ = ["build_caption", "clean_name", "positive_map_from_spans", "spans_to_token_range"]
