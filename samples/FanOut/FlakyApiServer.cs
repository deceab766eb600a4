using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace FanOut;

/// <summary>How the simulated API behaves: every request waits <see cref="Latency"/> ± <see cref="Jitter"/>, then
/// fails with 503 with probability <see cref="ErrorRate"/>.</summary>
public sealed record FlakyApiOptions
{
    public TimeSpan Latency { get; init; } = TimeSpan.FromMilliseconds(100);

    public TimeSpan Jitter { get; init; } = TimeSpan.FromMilliseconds(25);

    public double ErrorRate { get; init; } = 0.02;

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first bad value.</summary>
    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(Latency, TimeSpan.Zero, nameof(Latency));
        ArgumentOutOfRangeException.ThrowIfLessThan(Jitter, TimeSpan.Zero, nameof(Jitter));
        if (double.IsNaN(ErrorRate) || ErrorRate is < 0 or > 1)
        {
            throw new ArgumentOutOfRangeException(nameof(ErrorRate), ErrorRate, "The error rate must be between 0 and 1.");
        }
    }
}

/// <summary>
/// A slow, flaky HTTP API on 127.0.0.1 (a free port), in-process: <c>GET /items/{id}</c> answers after the configured
/// latency, or fails with 503 at the configured rate. It counts the requests it is serving (current and peak) and
/// how often it saw each id, so a client's concurrency bound can be checked from the server's side. The peak counts
/// only requests whose client is still there: a request of a client process that was killed is not in flight, even
/// before the server has noticed the closed connection and ended it.
/// </summary>
public sealed class FlakyApiServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly FlakyApiOptions _options;

    /// <summary>Requests received whose response has not been started.</summary>
    private readonly ConcurrentDictionary<Request, byte> _inFlight = new();

    /// <summary>The most requests in flight whose clients were still connected, as counted when each request arrived.</summary>
    private int _peakInFlight;

    private long _requests;
    private long _errors;

    /// <summary>Requests seen per id (every attempt counts).</summary>
    private readonly ConcurrentDictionary<int, int> _hits = new();

    private FlakyApiServer(WebApplication app, FlakyApiOptions options)
    {
        _app = app;
        _options = options;
        BaseAddress = null!;
    }

    /// <summary>Where the server listens, e.g. <c>http://127.0.0.1:41234/</c>.</summary>
    public Uri BaseAddress { get; private set; }

    public int InFlight => _inFlight.Count;

    public int PeakInFlight => Volatile.Read(ref _peakInFlight);

    public long Requests => Interlocked.Read(ref _requests);

    public long Errors => Interlocked.Read(ref _errors);

    /// <summary>How many requests the server received for <paramref name="id"/> (0 if none).</summary>
    public int HitsFor(int id) => _hits.TryGetValue(id, out int n) ? n : 0;

    /// <summary>Starts a server on 127.0.0.1 on a port the OS picks.</summary>
    public static async Task<FlakyApiServer> StartAsync(FlakyApiOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new FlakyApiOptions();
        options.Validate();

        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
        builder.Logging.ClearProviders();
        // The server is a component of the demo, not its host: Ctrl+C belongs to the program (which cancels the run
        // and reports), so the default console lifetime must not grab SIGINT and stop the server under the run.
        builder.Services.AddSingleton<IHostLifetime, ComponentLifetime>();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0));
        WebApplication app = builder.Build();

        var server = new FlakyApiServer(app, options);
        app.MapGet("/items/{id:int}", (int id, HttpContext context) => server.HandleAsync(id, context));
        app.MapGet("/health", () => "ok"); // not counted: lets a client warm up its connection and the JIT
        await app.StartAsync(cancellationToken);

        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        server.BaseAddress = new Uri(address.EndsWith('/') ? address : address + "/");
        return server;
    }

    private async Task HandleAsync(int id, HttpContext context)
    {
        var request = new Request(context.RequestAborted, context.Features.Get<IConnectionSocketFeature>()?.Socket);
        _inFlight.TryAdd(request, 0);
        UpdatePeak(_inFlight.Keys.Count(r => !r.ClientLeft));
        Interlocked.Increment(ref _requests);
        _hits.AddOrUpdate(id, 1, static (_, n) => n + 1);

        bool fail;
        try
        {
            await Task.Delay(NextLatency(), context.RequestAborted);
            fail = Random.Shared.NextDouble() < _options.ErrorRate;
        }
        catch (OperationCanceledException)
        {
            return; // the client gave up (e.g. Ctrl+C): nobody reads an answer
        }
        finally
        {
            // Leave the count before the first byte of the response goes out: the client starts its next request as
            // soon as it has read this response, and that request must not be counted alongside this one.
            _inFlight.TryRemove(request, out _);
        }

        if (fail)
        {
            Interlocked.Increment(ref _errors);
            context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
            return;
        }

        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync($$"""{"id":{{id}},"value":{{id * 2}}}""", context.RequestAborted);
    }

    private TimeSpan NextLatency()
    {
        double jitter = _options.Jitter.TotalMilliseconds * ((Random.Shared.NextDouble() * 2) - 1);
        return TimeSpan.FromMilliseconds(Math.Max(0, _options.Latency.TotalMilliseconds + jitter));
    }

    private void UpdatePeak(int current)
    {
        int peak = Volatile.Read(ref _peakInFlight);
        while (current > peak)
        {
            int seen = Interlocked.CompareExchange(ref _peakInFlight, current, peak);
            if (seen == peak)
            {
                return;
            }

            peak = seen;
        }
    }

    /// <summary>A request in flight: whether its client is still there. When a client process dies, the kernel closes its
    /// connections at once, but the server ends the request only once it has read the end of the connection and the
    /// handler's continuation has run, which on a loaded machine can come after the dead client's permit (freed by the
    /// database as it sees the process's session end) has let another request in.</summary>
    private sealed class Request(CancellationToken aborted, Socket? socket)
    {
        public bool ClientLeft
        {
            get
            {
                if (aborted.IsCancellationRequested)
                {
                    return true;
                }

                try
                {
                    // Readable with nothing to read: the client closed the connection (a live HTTP/1.1 client sends
                    // nothing more while it waits for the response).
                    return socket is not null && socket.Poll(0, SelectMode.SelectRead) && socket.Available == 0;
                }
                catch (Exception e) when (e is ObjectDisposedException or SocketException)
                {
                    return true; // the server has closed it already
                }
            }
        }
    }

    /// <summary>A host lifetime that neither waits for nor listens to anything: the owner starts and stops the host.</summary>
    private sealed class ComponentLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
