"""Paper trading through a running inference server, day by day, accounted exactly as the backtest.

    python deployment/paper_trade.py --server URL [--token-file F] [--source csv|synthetic] [--data-dir DIR]
        --start DATE --end DATE --out DIR

For each day from the day after the server's market date to ``--end`` the bars of that day are
posted to ``POST /v1/bars`` (a ticker whose market is closed is absent, as in the CSVs). From
``--start`` on, after each day's bars the paper portfolio (all cash at the start) asks ``POST
/v1/allocate`` with its current drifted weights and trades the answer at that day's close. The next
day's bars then give the returns; holdings drift and costs are charged by the environment's own step
kernel (``environments.accounting.step_portfolios``) with the export's env and cost settings (from
``GET /v1/market?days=K``), so the decision days, the closed-asset rule, the cap, drawdown control,
fees and slippage are those of ``evaluation/backtester.py``: decisions on ``start .. end - 1``.

Writes ``OUT/decisions.csv`` (date, one column per ticker and CASH: the post-trade weights, as the
backtester's daily agent weights) and ``OUT/nav.csv`` (date, NAV relative to the start). Bad input
(an unreachable server, a bad token, a span the server has passed, bars the server refuses) prints one
sentence and exits with status 2.
"""

from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import http.client
import json
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data.atomic_files import atomic_path
from data.config import DataConfig, from_mapping
from data.feature_engineering import store_returns
from data.market import DataError
from data.universe import DEFAULT_COSTS_BPS, Asset, Universe
from deployment.security import load_token
from environments.accounting import MarketArrays, PortfolioState, check_actions, step_portfolios
from environments.config import EnvConfig
from environments.crypto_hedge_fund_env import trailing_adv

CASH = "CASH"


class ServerClient:
    """JSON over one keep-alive HTTP connection; a non-2xx answer raises ``DataError`` with its sentence."""

    def __init__(self, url: str, token: str | None, timeout: float = 60.0) -> None:
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise DataError(f"--server must be an http:// URL like http://127.0.0.1:8000, got '{url}'")
        self.conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
        self.headers = {"content-type": "application/json"}
        if token:
            self.headers["authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, body: Any = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        try:
            self.conn.request(method, path, body=data, headers=self.headers)
            resp = self.conn.getresponse()
            raw = resp.read()
        except OSError as err:
            raise DataError(f"the server cannot be reached ({err.__class__.__name__}: {err})") from None
        try:
            out = json.loads(raw)
        except ValueError:
            raise DataError(f"the server answered {method} {path} with status {resp.status} and no JSON") from None
        if resp.status != 200:
            raise DataError(f"the server refused {method} {path} ({resp.status}): {out.get('error', out)}")
        return out

    def close(self) -> None:
        self.conn.close()


def load_frames(universe: Universe, data_cfg: DataConfig, source: str, data_dir: str | None
                ) -> dict[str, pd.DataFrame]:
    """Per-ticker quote-day bars from the source, as the server's history reads them."""
    from data.data_loader import _frames_from_csv, _market_to_frames
    from data.synthetic import generate_market

    if source == "csv":
        frames, missing = _frames_from_csv(universe, data_dir or "")
        if missing:
            raise DataError(next(iter(missing.values())))
        return frames
    return _market_to_frames(generate_market(universe, data_cfg.start, data_cfg.end, data_cfg.seed))


def bars_of(frames: dict[str, pd.DataFrame], day: np.datetime64) -> dict[str, dict[str, float]]:
    out = {}
    for t, f in frames.items():
        idx = f.index.to_numpy().astype("datetime64[D]")
        k = int(np.searchsorted(idx, day))
        if k < len(idx) and idx[k] == day:
            row = f.iloc[k]
            out[t] = {"open": float(row["Open"]), "high": float(row["High"]), "low": float(row["Low"]),
                      "close": float(row["Close"]), "volume": float(row["Volume"])}
    return out


class PaperBook:
    """The paper portfolio: accounting rows as the feature store holds them, and the env's step kernel.

    Rows (one per day, from the server): ``close`` (N,) NaN where not listed, ``dollar_volume`` (N,),
    ``tradable``/``listed`` (N,) bool. ``step(action)`` trades at the decision day's close and drifts
    to the newest day (call it once that day's row has arrived).
    """

    def __init__(self, env: EnvConfig, categories: tuple[str, ...], costs_bps: dict[str, Any]) -> None:
        self.env = env
        costs = dict(DEFAULT_COSTS_BPS)
        costs.update({k: (float(v[0]), float(v[1])) for k, v in costs_bps.items()})
        self.fee = np.array([costs[c][0] for c in categories]) * 1e-4
        self.slip = np.array([costs[c][1] for c in categories]) * 1e-4
        n = len(categories)
        self.dates: list[str] = []
        self.close: list[np.ndarray] = []
        self.volume: list[np.ndarray] = []
        self.tradable: list[np.ndarray] = []
        self.listed: list[np.ndarray] = []
        cash = np.zeros(n + 1)
        cash[-1] = 1.0
        self.state = PortfolioState.initial(np.array([env.initial_nav]), cash[None], env.vol_window)
        self.terminated = False

    def add_rows(self, rows: dict[str, Any]) -> None:
        for k, d in enumerate(rows["dates"]):
            if self.dates and d <= self.dates[-1]:
                continue
            self.dates.append(d)
            self.close.append(np.array([np.nan if x is None else x for x in rows["close"][k]], dtype=np.float64))
            self.volume.append(np.asarray(rows["dollar_volume"][k], dtype=np.float64))
            self.tradable.append(np.asarray(rows["tradable"][k], dtype=bool))
            self.listed.append(np.asarray(rows["listed"][k], dtype=bool))

    @property
    def weights(self) -> np.ndarray:
        return self.state.weights[0]

    def step(self, action: np.ndarray) -> np.ndarray:
        """Trade ``action`` (N+1,) at the close of the second-newest day; returns the post-trade weights."""
        close, listed = np.array(self.close), np.array(self.listed)
        returns = store_returns(close, listed)  # the feature store's returns: 0 where not listed
        # No prior here: the server's weights are already the residual policy's tilt of its rule.
        market = MarketArrays(returns=returns, tradable=np.array(self.tradable),
                              adv=trailing_adv(np.array(self.volume), self.env.adv_window),
                              fee_rate=self.fee, slip_rate=self.slip)
        t = np.array([len(self.dates) - 2])
        act = check_actions(action, (self.fee.shape[0] + 1,))
        self.state, out = step_portfolios(self.state, act[None], t, market, self.env)
        self.terminated = bool(out.terminated[0])
        return out.target[0].copy()


def paper_trade(client: ServerClient, source: str, data_dir: str | None, start: str, end: str,
                log=print) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stream the days to ``end`` through the server; return (decisions, nav) frames indexed by date."""
    try:
        d0, d1 = np.datetime64(start, "D"), np.datetime64(end, "D")
    except ValueError:
        raise DataError(f"--start and --end must be ISO dates like 2023-01-01, got '{start}' and '{end}'") from None
    if d1 <= d0:
        raise DataError(f"--end {end} must come after --start {start}")
    info = client.call("GET", "/v1/market?days=1")
    acc = info["accounting"]
    env = from_mapping(EnvConfig, acc["env"], "env")
    data_cfg = from_mapping(DataConfig, acc["data"], "data")
    tickers, categories = tuple(info["tickers"]), tuple(info["categories"])
    today = np.datetime64(info["date"], "D")
    if today >= d0:
        raise DataError(f"the server's market state is already at {today}; start it with history up to "
                        f"the day before --start {start}")
    universe = Universe(tuple(Asset(t, c, 0.0, 0.0) for t, c in zip(tickers, categories)))
    frames = load_frames(universe, data_cfg, source, data_dir)
    book = PaperBook(env, categories, acc["data"].get("costs_bps", {}))
    book.add_rows(client.call("GET", f"/v1/market?days={env.adv_window + 1}")["rows"])
    keys = (*tickers, CASH)
    decided, navs, pending = [], [], None
    for day in np.arange(today + 1, d1 + 1, dtype="datetime64[D]"):
        bars = bars_of(frames, day)
        client.call("POST", "/v1/bars", {"date": str(day), "bars": bars})
        book.add_rows(client.call("GET", "/v1/market?days=1")["rows"])
        if day < d0:
            continue
        if pending is not None and not book.terminated:
            target = book.step(pending[1])
            decided.append((pending[0], target))
            navs.append((str(day), float(book.state.nav[0])))
        elif pending is not None:  # liquidated or bankrupt: flat cash, as the backtester records it
            decided.append((pending[0], np.eye(len(keys))[-1]))
        if day == d1:
            break
        current = {k: float(w) for k, w in zip(keys, book.weights)}
        answer = client.call("POST", "/v1/allocate", {"current_weights": current})
        if answer.get("date") != str(day):
            raise DataError(f"the server allocated for {answer.get('date')}, not {day}")
        action = np.clip(np.array([answer["weights"][k] for k in keys], dtype=np.float64), 0.0, None)
        pending = (str(day), action)
        if len(decided) % 50 == 49:
            log(f"  {day}: {len(decided) + 1} decisions")
    if not decided:
        raise DataError(f"no decision between {start} and {end}")
    decisions = pd.DataFrame([w for _, w in decided], index=pd.Index([d for d, _ in decided], name="date"),
                             columns=list(keys))
    nav = pd.DataFrame({"nav": [env.initial_nav] + [v for _, v in navs]},
                       index=pd.Index([start] + [d for d, _ in navs], name="date")) / env.initial_nav
    return decisions, nav


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, float_format="%.17g")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Paper-trade through a running inference server.")
    p.add_argument("--server", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--token-file", help="file holding the server's bearer token (else $DRL_SERVER_TOKEN)")
    p.add_argument("--source", choices=("csv", "synthetic"), default="csv")
    p.add_argument("--data-dir", help="CSV folder (for --source csv)")
    p.add_argument("--start", required=True)
    p.add_argument("--end", required=True)
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    client = None
    try:
        client = ServerClient(args.server, load_token(args.token_file))
        decisions, nav = paper_trade(client, args.source, args.data_dir, args.start, args.end)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        _write_csv(decisions, out / "decisions.csv")
        _write_csv(nav, out / "nav.csv")
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if client is not None:
            client.close()
    print(f"wrote {out / 'decisions.csv'} ({len(decisions)} decisions, final NAV {nav['nav'].iloc[-1]:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
