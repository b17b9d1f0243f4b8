"""CSV and yfinance sources: validation messages, calendar alignment, drop-and-report, cache and retries.

All data is synthetic and written to ``tmp_path``; the yfinance tests replay the recorded responses in
``tests/fixtures/yfinance`` in place of the network call.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data import yahoo
from data.config import DataConfig
from data.data_loader import align, load_market, read_csv_ticker, validate_ohlcv
from data.market import DataError
from data.universe import build_universe

FIXTURES = Path(__file__).parent / "fixtures" / "yfinance"
HEADER = "Date,Open,High,Low,Close,Volume\n"


def bars(dates, start_price=100.0, step=0.01):
    """A clean OHLCV frame over ``dates`` (ISO strings): close grows by ``step`` per row."""
    close = start_price * (1.0 + step) ** np.arange(len(dates))
    return pd.DataFrame({
        "Date": list(dates), "Open": close * 0.999, "High": close * 1.01, "Low": close * 0.98,
        "Close": close, "Volume": np.arange(1, len(dates) + 1) * 1000.0,
    })


def days(start, end, weekdays_only=False):
    d = pd.date_range(start, end, freq="D")
    if weekdays_only:
        d = d[d.day_of_week < 5]
    return [x.strftime("%Y-%m-%d") for x in d]


def write(folder: Path, ticker: str, frame: pd.DataFrame) -> Path:
    path = folder / f"{ticker}.csv"
    frame.to_csv(path, index=False)
    return path


def config(folder, universe=None, start="2021-01-01", end="2021-03-31", min_history_days=5, **kw):
    universe = universe or {"growth": ["AAA-USD"], "traditional": ["EEE"]}
    return DataConfig(universe=universe, start=start, end=end, train_end=end, source="csv",
                      data_dir=str(folder), min_history_days=min_history_days, **kw)


@pytest.fixture
def market_dir(tmp_path):
    """AAA-USD daily 2021-01-01..03-31, EEE weekdays 2020-12-01..2021-03-31 without Mon 2021-01-18."""
    write(tmp_path, "AAA-USD", bars(days("2021-01-01", "2021-03-31")))
    etf_days = [d for d in days("2020-12-01", "2021-03-31", weekdays_only=True) if d != "2021-01-18"]
    write(tmp_path, "EEE", bars(etf_days, start_price=50.0, step=0.002))
    return tmp_path


# ----------------------------------------------------------------------------------------------- validation

def _bad(frame_edit):
    frame = bars(days("2021-01-01", "2021-01-10"))
    frame_edit(frame)
    return frame


def _set(col, row, value):
    def edit(frame):
        if isinstance(value, str):
            frame[col] = frame[col].astype(object)
        frame.loc[row, col] = value
    return edit


def _swap_dates(a, b):
    def edit(frame):
        frame.loc[[a, b], "Date"] = frame.loc[[b, a], "Date"].to_numpy()
    return edit


def _scale_from(row, factor):
    def edit(frame):
        cols = ["Open", "High", "Low", "Close"]
        frame.loc[row:, cols] = frame.loc[row:, cols] * factor
    return edit


VALIDATION_CASES = {
    "unparsable date": (_set("Date", 3, "2021-13-45"), r"unparsable date '2021-13-45' on data row 4"),
    "NaN price": (_set("Close", 4, np.nan), r"missing or non-numeric Close on 2021-01-05"),
    "text price": (_set("Open", 2, "n/a"), r"missing or non-numeric Open on 2021-01-03"),
    "zero price": (_set("Low", 5, 0.0), r"zero or negative Low \(0\) on 2021-01-06"),
    "negative price": (_set("Close", 6, -3.0), r"zero or negative Close \(-3\) on 2021-01-07"),
    "negative volume": (_set("Volume", 1, -5.0), r"negative Volume \(-5\) on 2021-01-02"),
    "High below Low": (_set("High", 7, 1.0), r"High \(1\) below Low \([0-9.]+\) on 2021-01-08"),
    "duplicate date": (_set("Date", 5, "2021-01-05"), r"has the date 2021-01-05 twice"),
    "unsorted dates": (_swap_dates(4, 5), r"unsorted dates: 2021-01-05 comes after 2021-01-06"),
    "jump up": (_scale_from(8, 25.0),
                r"absurd one-day jump on 2021-01-09 \(close [0-9.]+ -> [0-9.]+\)"),
    "jump down": (_scale_from(2, 0.04),
                  r"absurd one-day jump on 2021-01-03"),
    "missing column": (lambda f: f.drop(columns=["High"], inplace=True),
                       r"lacks the column\(s\) High; expected Date,Open,High,Low,Close,Volume"),
}


@pytest.mark.parametrize("case", sorted(VALIDATION_CASES))
def test_each_validation_error_names_file_and_date(tmp_path, case):
    edit, message = VALIDATION_CASES[case]
    path = write(tmp_path, "AAA-USD", _bad(edit))
    with pytest.raises(DataError, match=message) as err:
        read_csv_ticker(path)
    text = str(err.value)
    assert str(path) in text and "\n" not in text
    # The loader surfaces the same sentence.
    write(tmp_path, "EEE", bars(days("2021-01-01", "2021-01-10")))
    with pytest.raises(DataError, match=message):
        load_market(config(tmp_path, start="2021-01-01", end="2021-01-10", min_history_days=2))


def test_unreadable_file(tmp_path):
    (tmp_path / "A.csv").mkdir()
    with pytest.raises(DataError, match=r"file '.*A\.csv' cannot be read"):
        read_csv_ticker(tmp_path / "A.csv")
    (tmp_path / "B.csv").write_bytes(b"Date,Open\n\xff\xfe,\x00\x81")
    with pytest.raises(DataError, match=r"file '.*B\.csv' "):
        read_csv_ticker(tmp_path / "B.csv")


def test_empty_file_and_header_only_file(tmp_path):
    (tmp_path / "A.csv").write_text("")
    with pytest.raises(DataError, match=r"file '.*A\.csv' is empty$"):
        read_csv_ticker(tmp_path / "A.csv")
    (tmp_path / "B.csv").write_text(HEADER)
    with pytest.raises(DataError, match=r"file '.*B\.csv' is empty: it has a header but no rows"):
        read_csv_ticker(tmp_path / "B.csv")


def test_validation_errors_at_the_loader_level(tmp_path, market_dir):
    with pytest.raises(DataError, match=r"data directory '.*nowhere' does not exist"):
        load_market(config(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"unknown data source 'parquet'; expected one of synthetic, csv, yfinance"):
        load_market(config(market_dir), source="parquet")
    with pytest.raises(DataError, match=r"no data between 2030-01-01 and 2030-06-30 for any ticker"):
        load_market(config(market_dir, start="2030-01-01", end="2030-06-30"))
    with pytest.raises(DataError, match=r"end 2021-01-01 is before start 2021-03-01"):
        load_market(config(market_dir, start="2021-03-01", end="2021-01-01"))
    with pytest.raises(DataError, match=r"is not an ISO date"):
        load_market(config(market_dir, start="yesterday"))
    with pytest.raises(DataError, match=r"source 'csv' needs a data directory"):
        load_market(config(""))


def test_adjusted_close_rescales_prices_and_high_low_contain_open_close(tmp_path):
    frame = bars(days("2021-01-01", "2021-01-05"))
    frame["Adj Close"] = frame["Close"] * 0.5
    frame.loc[1, "High"] = frame.loc[1, "Close"] * 0.999  # High below Close: widened, not an error
    clean = read_csv_ticker(write(tmp_path, "A", frame))
    np.testing.assert_allclose(clean["Close"], frame["Close"] * 0.5)
    np.testing.assert_allclose(clean["Open"], frame["Open"] * 0.5)
    assert (clean["High"] >= clean[["Open", "Close"]].max(axis=1)).all()
    assert (clean["Low"] <= clean[["Open", "Close"]].min(axis=1)).all()
    assert clean.index.dtype == np.dtype("datetime64[s]") or str(clean.index.dtype).startswith("datetime64")


def test_real_quirks_are_not_errors(tmp_path):
    """A UVXY-like series falling from 8.8e10 by orders of magnitude, and a stablecoin near 1.0."""
    n = 400
    close = 8.8e10 * np.exp(-0.05 * np.arange(n))  # ~-5%/day: 8.8e10 -> ~2e2
    vol = pd.DataFrame({"Date": days("2020-01-01", "2021-12-31")[:n], "Open": close, "High": close * 1.02,
                        "Low": close * 0.97, "Close": close, "Volume": 0.0})
    stable = bars(days("2020-01-01", "2021-12-31")[:n], start_price=1.0, step=0.0)
    stable["Close"] = 1.0 + 0.002 * np.sin(np.arange(n))
    stable["High"] = stable[["Open", "Close"]].max(axis=1) + 1e-4
    write(tmp_path, "UVXY", vol)
    write(tmp_path, "USDT-USD", stable)
    m = load_market(config(tmp_path, {"hedge": ["UVXY"], "stable": ["USDT-USD"]}, "2020-01-01", "2021-12-31"),
                    verbose=False)
    assert m.close[0, 0] == pytest.approx(8.8e10) and m.close[-1, 0] < 1e3
    assert np.nanmax(np.abs(m.close[:, 1] - 1.0)) < 0.01


# ------------------------------------------------------------------------------------------------ alignment

def test_alignment_weekend_carry_zero_return_and_masks(market_dir):
    m = load_market(config(market_dir), verbose=False)
    assert m.source == "csv" and m.tickers == ("AAA-USD", "EEE") and m.categories == ("growth", "traditional")
    assert m.dates[0] == np.datetime64("2021-01-01") and m.dates[-1] == np.datetime64("2021-03-31")
    assert m.n_days == 90 and m.close.shape == (90, 2)
    e = 1
    weekday = pd.DatetimeIndex(m.dates.astype("datetime64[ns]")).day_of_week.to_numpy()
    holiday = m.dates == np.datetime64("2021-01-18")
    closed = (weekday >= 5) | holiday
    # EEE was quoted before the span (Thu 2020-12-31): listed from Fri 2021-01-01 on (a quote day).
    assert m.listed[:, e].all()
    np.testing.assert_array_equal(m.tradable[:, e], ~closed)
    assert m.tradable[:, 0].all()
    # Carry-over: a closed day repeats the previous close (zero return), as a flat bar with volume 0.
    ret = m.close[1:, e] / m.close[:-1, e] - 1.0
    assert np.all(ret[closed[1:]] == 0.0) and np.all(ret[~closed[1:]] > 0.0)
    for col in (m.open, m.high, m.low):
        np.testing.assert_array_equal(col[closed, e], m.close[closed, e])
    assert np.all(m.volume[closed, e] == 0.0) and np.all(m.volume[~closed, e] > 0.0)
    # Values of quoted days are the file's values, exactly.
    raw = pd.read_csv(market_dir / "EEE.csv").set_index("Date")
    assert m.close[m.dates == np.datetime64("2021-01-19"), e][0] == raw.loc["2021-01-19", "Close"]
    assert m.close[holiday, e][0] == raw.loc["2021-01-15", "Close"]  # Fri close carried to Mon holiday


def test_not_yet_listed_assets_are_masked(tmp_path):
    write(tmp_path, "AAA-USD", bars(days("2021-01-01", "2021-03-31")))
    write(tmp_path, "NEW-USD", bars(days("2021-02-10", "2021-03-31"), start_price=3.0))
    m = load_market(config(tmp_path, {"growth": ["AAA-USD", "NEW-USD"]}), verbose=False)
    first = int(np.flatnonzero(m.dates == np.datetime64("2021-02-10"))[0])
    assert np.isnan(m.close[:first, 1]).all() and np.isnan(m.high[:first, 1]).all()
    assert not m.listed[:first, 1].any() and not m.tradable[:first, 1].any()
    assert m.listed[first:, 1].all() and m.tradable[first:, 1].all()
    assert m.close[first, 1] == 3.0 and np.all(m.volume[:first, 1] == 0.0)


def test_calendar_is_trimmed_to_the_quoted_span(tmp_path):
    write(tmp_path, "AAA-USD", bars(days("2021-01-10", "2021-02-20")))
    write(tmp_path, "BBB-USD", bars(days("2021-01-12", "2021-03-05")))
    m = load_market(config(tmp_path, {"growth": ["AAA-USD", "BBB-USD"]}, "2021-01-01", "2021-12-31"),
                    verbose=False)
    assert m.dates[0] == np.datetime64("2021-01-10") and m.dates[-1] == np.datetime64("2021-03-05")
    assert any("calendar trimmed" in n for n in m.notes)
    assert any("AAA-USD's last quote is 2021-02-20" in n for n in m.notes)


def test_gaps_in_a_seven_day_series_are_carried_and_noted(tmp_path):
    coin_days = [d for d in days("2021-01-01", "2021-03-31") if d not in ("2021-02-02", "2021-02-03")]
    write(tmp_path, "AAA-USD", bars(coin_days))
    write(tmp_path, "BBB-USD", bars(days("2021-01-01", "2021-03-31")))
    m = load_market(config(tmp_path, {"growth": ["AAA-USD", "BBB-USD"]}), verbose=False)
    gap = (m.dates >= np.datetime64("2021-02-02")) & (m.dates <= np.datetime64("2021-02-03"))
    assert not m.tradable[gap, 0].any() and m.listed[gap, 0].all() and m.tradable[~gap, 0].all()
    assert np.all(m.close[gap, 0] == m.close[np.flatnonzero(gap)[0] - 1, 0])
    assert m.notes == ("AAA-USD has no quote on 2 day(s) between its first and last quote (first: "
                       "2021-02-02); its price is carried over and it is not tradable then",)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.booleans(), min_size=20, max_size=60), st.integers(0, 10))
def test_alignment_invariants_for_any_quote_pattern(quoted_flags, first_listed):
    """Whatever days an asset quotes: closes are the last quote's, returns are 0 on unquoted days,
    ``listed`` is monotone, ``tradable`` is exactly the quoted days."""
    n = len(quoted_flags)
    cal = np.arange(np.datetime64("2022-03-01"), np.datetime64("2022-03-01") + n)
    flags = np.array(quoted_flags)
    flags[:first_listed] = False
    flags[0] = True if first_listed == 0 else flags[0]
    if flags.sum() < 1:
        flags[-1] = True
    q_days = cal[flags]
    frame = pd.DataFrame({"Open": 1.0, "High": 2.0, "Low": 0.5, "Close": np.arange(1, len(q_days) + 1.0),
                          "Volume": 7.0}, index=pd.Index(q_days, name="Date"))
    ref = pd.DataFrame({"Open": 1.0, "High": 1.0, "Low": 1.0, "Close": 1.0, "Volume": 1.0},
                       index=pd.Index(cal, name="Date"))
    universe = build_universe({"growth": ["REF-USD"], "traditional": ["X"]})
    m = align({"REF-USD": ref, "X": frame}, universe, str(cal[0]), str(cal[-1]), "csv", verbose=False)
    listed, tradable, close = m.listed[:, 1], m.tradable[:, 1], m.close[:, 1]
    np.testing.assert_array_equal(tradable, flags)
    assert np.all(np.diff(listed.astype(int)) >= 0) and np.all(listed >= tradable)
    np.testing.assert_array_equal(listed, np.cumsum(flags) > 0)
    np.testing.assert_array_equal(close[listed], np.cumsum(flags)[listed].astype(float))
    assert np.isnan(close[~listed]).all()
    both = listed[1:] & listed[:-1]
    unquoted = both & ~flags[1:]
    assert np.all(close[1:][unquoted] == close[:-1][unquoted])
    np.testing.assert_array_equal(m.volume[:, 1], np.where(flags, 7.0, 0.0))


# -------------------------------------------------------------------------------------------- drop-and-report

def test_missing_and_short_tickers_are_dropped_and_reported(market_dir, capsys):
    write(market_dir, "SHORT-USD", bars(days("2021-03-29", "2021-03-31")))
    cfg = config(market_dir, {"growth": ["SHORT-USD", "AAA-USD", "GONE-USD"], "traditional": ["EEE"]},
                 min_history_days=10)
    m = load_market(cfg)
    assert m.tickers == ("AAA-USD", "EEE") and m.dropped == ("SHORT-USD", "GONE-USD")  # universe order
    err = capsys.readouterr().err
    assert "note: dropped GONE-USD: no file GONE-USD.csv" in err
    assert "note: dropped SHORT-USD: only 3 quotes between 2021-01-01 and 2021-03-31, fewer than " \
           "min_history_days=10" in err
    assert len(m.notes) == 2


def test_zero_volume_and_constant_price_series_are_kept_with_one_warning_line_each(market_dir, capsys):
    flat = bars(days("2021-01-01", "2021-03-31"), start_price=1.0, step=0.0)  # a stablecoin stuck at 1.0
    write(market_dir, "FLAT-USD", flat)
    write(market_dir, "DRY-USD", bars(days("2021-01-01", "2021-03-31")).assign(Volume=0.0))
    cfg = config(market_dir, {"growth": ["AAA-USD", "DRY-USD"], "stable": ["FLAT-USD"], "traditional": ["EEE"]})
    m = load_market(cfg)
    assert set(m.tickers) == {"AAA-USD", "DRY-USD", "EEE", "FLAT-USD"}  # kept: legal, only suspicious
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning: ")]
    assert warnings == [
        "warning: DRY-USD reports zero volume on all 90 quoted days between 2021-01-01 and 2021-03-31; "
        "the slippage rule sees no traded volume for it",
        "warning: FLAT-USD's close is 1 on all 90 quoted days between 2021-01-01 and 2021-03-31; "
        "its returns are all zero (a stale or placeholder series?)",
    ]
    assert [n for n in m.notes if n.startswith("warning: ")] == warnings
    # A clean market gives no warning at all.
    load_market(config(market_dir))
    assert "warning:" not in capsys.readouterr().err


def test_substitutes_are_applied(market_dir):
    cfg = config(market_dir, {"growth": ["AAA-USD"], "traditional": ["IEF"]}, substitutes={"IEF": "EEE"})
    assert load_market(cfg, verbose=False).tickers == ("AAA-USD", "EEE")


def test_fewer_than_two_assets_left_is_an_error(market_dir):
    cfg = config(market_dir, {"growth": ["AAA-USD", "GONE-USD"]})
    with pytest.raises(DataError, match=r"only AAA-USD has enough history .* at least 2 assets are needed "
                                        r"\(dropped: GONE-USD \(no file GONE-USD.csv"):
        load_market(cfg, verbose=False)


def test_synthetic_source_goes_through_the_same_alignment():
    from data.synthetic import generate_market

    cfg = DataConfig(universe={"growth": ["BTC-USD", "SOL-USD"], "traditional": ["SPY"]},
                     start="2020-03-01", end="2020-05-31", min_history_days=60, seed=3)
    m = load_market(cfg, verbose=False)
    assert m.source == "synthetic" and m.synthetic
    assert m.dropped == ("SOL-USD",) and m.tickers == ("BTC-USD", "SPY")  # SOL listed 2020-04-10: 52 days
    raw = generate_market(cfg.build_universe(), cfg.start, cfg.end, cfg.seed)
    keep = [0, 2]
    for name in ("open", "high", "low", "close", "volume", "listed", "tradable"):
        np.testing.assert_array_equal(getattr(m, name), getattr(raw, name)[:, keep], err_msg=name)


# ------------------------------------------------------------------------------------------------- yfinance

def recorded_download(calls):
    """A stand-in for ``data.yahoo._download`` replaying tests/fixtures/yfinance/TICKER.history.csv."""
    def download(ticker, start, end):
        calls.append((ticker, start, end))
        path = FIXTURES / f"{ticker}.history.csv"
        if not path.is_file():
            return pd.DataFrame()  # what _download returns for a ticker Yahoo does not know
        frame = pd.read_csv(path, index_col="Date")
        frame.index = pd.to_datetime(frame.index, utc=True).tz_convert(
            "UTC" if ticker.endswith("-USD") else "America/New_York")
        return frame
    return download


def yf_config(cache, universe=None):
    universe = universe or {"growth": ["BTC-USD"], "traditional": ["SPY"]}
    return DataConfig(universe=universe, start="2021-01-01", end="2021-01-31", source="yfinance",
                      cache_dir=str(cache), min_history_days=10)


def test_yfinance_source_from_recorded_responses_and_cache(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(yahoo, "_download", recorded_download(calls))
    cfg = yf_config(tmp_path / "cache", {"growth": ["BTC-USD", "NOPE-USD"], "traditional": ["SPY"]})
    m = load_market(cfg, verbose=False)
    assert m.source == "yfinance" and m.tickers == ("BTC-USD", "SPY") and m.dropped == ("NOPE-USD",)
    assert sorted(c[0] for c in calls) == ["BTC-USD", "NOPE-USD", "SPY"]
    assert m.dates[0] == np.datetime64("2021-01-01") and m.n_days == 31
    spy = pd.read_csv(FIXTURES / "SPY.history.csv")
    # Exchange-time-zone timestamps map to their own calendar day; Yahoo's NaN holiday row is removed.
    jan19 = int(np.flatnonzero(m.dates == np.datetime64("2021-01-19"))[0])
    assert m.close[jan19, 1] == spy.loc[spy.Date.str.startswith("2021-01-19"), "Close"].item()
    assert not m.tradable[jan19 - 1, 1] and m.close[jan19 - 1, 1] == m.close[jan19 - 4, 1]  # MLK Monday
    assert not m.listed[:3, 1].any() and m.listed[3:, 1].all()  # first SPY quote: Mon 2021-01-04
    btc = pd.read_csv(FIXTURES / "BTC-USD.history.csv")
    np.testing.assert_array_equal(m.close[:, 0], btc["Close"].to_numpy())
    # Cached atomically under cache_dir/yfinance (no temp files left); a second load makes no call.
    cached = sorted(p.name for p in (tmp_path / "cache" / "yfinance").iterdir())
    assert cached == ["BTC-USD_2021-01-01_2021-01-31.csv", "SPY_2021-01-01_2021-01-31.csv"]

    def offline(*args):
        raise AssertionError("the network was used although the cache holds the data")

    monkeypatch.setattr(yahoo, "_download", offline)
    cfg2 = yf_config(tmp_path / "cache")
    again = load_market(cfg2, verbose=False)
    np.testing.assert_array_equal(again.close, m.close)
    np.testing.assert_array_equal(again.tradable, m.tradable)


def test_yfinance_retries_with_backoff_then_succeeds(tmp_path, monkeypatch):
    calls, sleeps = [], []
    replay = recorded_download(calls)
    failures = [ConnectionError("connection reset"), TimeoutError("read timed out")]

    def flaky(ticker, start, end):
        if failures:
            calls.append((ticker, start, end))
            raise failures.pop(0)
        return replay(ticker, start, end)

    monkeypatch.setattr(yahoo, "_download", flaky)
    table = yahoo.fetch_history("BTC-USD", "2021-01-01", "2021-01-31", cache_dir=str(tmp_path),
                                retries=3, backoff_s=0.5, sleep=sleeps.append)
    assert len(calls) == 3 and sleeps == [0.5, 1.0]
    assert list(table.columns) == ["Date", "Open", "High", "Low", "Close", "Volume"] and len(table) == 31


def test_yfinance_gives_up_with_one_sentence(tmp_path, monkeypatch):
    sleeps = []

    def down(ticker, start, end):
        raise ConnectionError("name resolution failed")

    monkeypatch.setattr(yahoo, "_download", down)
    with pytest.raises(DataError, match=r"^could not download SPY from yfinance after 3 attempts "
                                        r"\(name resolution failed\)$"):
        yahoo.fetch_history("SPY", "2021-01-01", "2021-01-31", cache_dir=str(tmp_path), sleep=sleeps.append)
    assert sleeps == [1.0, 2.0] and not (tmp_path / "yfinance").exists()


def test_yfinance_cache_rules(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(yahoo, "_download", recorded_download(calls))
    with pytest.raises(DataError, match=r"cache directory '.*' is inside the repository"):
        yahoo.fetch_history("SPY", "2021-01-01", "2021-01-31", cache_dir=str(Path(__file__).parent))
    # A span reaching today is not cached: its last bars may still change.
    yahoo.fetch_history("SPY", "2021-01-01", "2021-01-31", cache_dir=str(tmp_path), today=dt.date(2021, 1, 31))
    assert not (tmp_path / "yfinance").exists()
    yahoo.fetch_history("SPY", "2021-01-01", "2021-01-31", cache_dir=str(tmp_path), today=dt.date(2021, 2, 1))
    assert (tmp_path / "yfinance" / "SPY_2021-01-01_2021-01-31.csv").is_file() and len(calls) == 2
    # A damaged cache file is downloaded again and replaced.
    path = tmp_path / "yfinance" / "SPY_2021-01-01_2021-01-31.csv"
    path.write_text("Date,Open\n2021-01-04")
    table = yahoo.fetch_history("SPY", "2021-01-01", "2021-01-31", cache_dir=str(tmp_path))
    assert len(calls) == 3 and len(table) == 19 and pd.read_csv(path).shape == (19, 6)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert yahoo.cache_root(None) == (tmp_path / "xdg" / "drl-hedge-fund" / "yfinance").resolve()


def test_download_wrapper_against_a_fake_yfinance(monkeypatch):
    """``_download`` asks for ``end`` inclusive and maps Yahoo's missing-ticker error to an empty frame."""
    import yfinance
    from yfinance.exceptions import YFTzMissingError

    seen = {}

    class FakeTicker:
        def __init__(self, ticker):
            self.ticker = ticker

        def history(self, **kwargs):
            seen.update(kwargs, hide=yfinance.config.debug.hide_exceptions)
            if self.ticker == "NOPE":
                raise YFTzMissingError(self.ticker)
            return pd.DataFrame({"Close": [1.0]}, index=pd.DatetimeIndex(["2021-01-04"]))

    monkeypatch.setattr(yfinance, "Ticker", FakeTicker)
    before = yfinance.config.debug.hide_exceptions
    assert len(yahoo._download("SPY", "2021-01-01", "2021-01-31")) == 1
    assert seen["start"] == "2021-01-01" and seen["end"] == "2021-02-01" and seen["auto_adjust"] is True
    assert seen["hide"] is False and yfinance.config.debug.hide_exceptions == before
    assert yahoo._download("NOPE", "2021-01-01", "2021-01-31").empty


def test_to_table_handles_download_layout_and_nan_rows():
    idx = pd.DatetimeIndex(["2021-01-04", "2021-01-05", "2021-01-06"], tz="America/New_York")
    cols = pd.MultiIndex.from_product([["Open", "High", "Low", "Close", "Volume"], ["SPY"]])
    frame = pd.DataFrame(np.tile([2.0, 5.0, 1.0, 3.0, 100.0], (3, 1)), index=idx, columns=cols)
    frame.iloc[1] = np.nan
    table = yahoo.to_table(frame)
    assert list(table["Date"]) == ["2021-01-04", "2021-01-06"]
    assert validate_ohlcv(table, "t").shape == (2, 5)
