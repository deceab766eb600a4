using System.Threading.RateLimiting;
using AsyncIterTools;
using AsyncPrimitives.Postgres.Tests.Support;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>The examples of docs/scale-out.md (the <c>// doc:</c> regions), run against the test server.</summary>
public sealed class DocExamplesTests(PostgresServer server) : PostgresTest(server)
{
    public sealed record Invoice(int Id, decimal Amount);

    public sealed record Email(string To, string Subject);

    /// <summary>Calls made by the examples' <see cref="CallPartnerAsync"/>.</summary>
    private int _partnerCalls;

    /// <summary>The partner API the semaphore examples guard: checks the lease it is given and counts the call.</summary>
    private Task CallPartnerAsync(long fencingToken, CancellationToken lost)
    {
        fencingToken.Should().BePositive();
        lost.IsCancellationRequested.Should().BeFalse();
        Interlocked.Increment(ref _partnerCalls);
        return Task.CompletedTask;
    }

    /// <summary>Drops the schema the examples install (the default one), so each example starts from none.</summary>
    private async Task DropExampleSchemaAsync()
    {
        await using NpgsqlCommand drop = Admin.CreateCommand("DROP SCHEMA asynctools CASCADE");
        await drop.ExecuteNonQueryAsync();
    }

    [PostgresFact]
    public async Task SetupAndGlobalLimit()
    {
        string connectionString = Server.ConnectionString;
        CancellationToken cancellationToken = CancellationToken.None;

        // doc: scaleout-setup
        await using NpgsqlDataSource dataSource = NpgsqlDataSource.Create(connectionString);
        await using var coordinator = new PostgresCoordinator(dataSource, new PostgresCoordinatorOptions
        {
            Schema = "asynctools",                        // every instance uses the same schema
            LeaseDuration = TimeSpan.FromSeconds(30),     // renewed every 10 s while held
        });
        await coordinator.EnsureSchemaAsync(cancellationToken); // idempotent; safe when instances race
        // end doc

        // doc: scaleout-semaphore
        PostgresSemaphore partnerApi = coordinator.CreateSemaphore("partner-api", maxCount: 64);
        await using (PostgresLease lease = await partnerApi.AcquireAsync(cancellationToken))
        {
            // At most 64 calls in flight across every instance. Stop when the lease is lost.
            await CallPartnerAsync(lease.FencingToken, lease.Lost);
        }
        // end doc

        _partnerCalls.Should().Be(1);
        (await partnerApi.GetCurrentCountAsync()).Should().Be(64);
        await coordinator.DisposeAsync();
        await DropExampleSchemaAsync();
    }

    [PostgresFact]
    public async Task PackageReadmeExample()
    {
        string connectionString = Server.ConnectionString;
        CancellationToken cancellationToken = CancellationToken.None;

        {
            // doc: package-readme-postgres
            await using NpgsqlDataSource dataSource = NpgsqlDataSource.Create(connectionString);
            await using var coordinator = new PostgresCoordinator(dataSource);
            await coordinator.EnsureSchemaAsync();

            PostgresSemaphore partnerApi = coordinator.CreateSemaphore("partner-api", maxCount: 64);
            await using (PostgresLease lease = await partnerApi.AcquireAsync(cancellationToken))
            {
                await CallPartnerAsync(lease.FencingToken, lease.Lost); // at most 64 in flight across every instance
            }
            // end doc

            (await partnerApi.GetCurrentCountAsync()).Should().Be(64);
        }

        _partnerCalls.Should().Be(1);
        await DropExampleSchemaAsync();
    }

    [PostgresFact]
    public async Task RateLimiterAndLock()
    {
        PostgresCoordinator coordinator = (await JoinAsync()).Coordinator;
        CancellationToken cancellationToken = CancellationToken.None;
        var report = new List<long>();

        // doc: scaleout-ratelimiter
        // 64 in flight across every instance, and at most 100 calls a second from this one. The chain does not own the
        // limiters it chains: each is disposed on its own.
        using RateLimiter global = coordinator.CreateSemaphore("partner-api", maxCount: 64).AsRateLimiter();
        using RateLimiter rate = new TokenBucketRateLimiter(new TokenBucketRateLimiterOptions
        {
            TokenLimit = 100,
            TokensPerPeriod = 100,
            ReplenishmentPeriod = TimeSpan.FromSeconds(1),
            QueueLimit = 1_000,
        });
        using RateLimiter limiter = RateLimiter.CreateChained(global, rate);

        using (RateLimitLease permit = await limiter.AcquireAsync(cancellationToken: cancellationToken))
        {
            if (permit.IsAcquired)
            {
                // call the partner
            }
        }
        // end doc

        // doc: scaleout-lock
        PostgresLock nightly = coordinator.CreateLock("nightly-report");
        await using (PostgresLease? lease = await nightly.TryAcquireAsync(cancellationToken))
        {
            if (lease is not null) // another instance is already on it otherwise
            {
                // Writes carry the token: the store refuses a token lower than the last one it saw, so an
                // instance that lost the lease during a long pause cannot overwrite a newer holder's work.
                report.Add(lease.FencingToken);
            }
        }
        // end doc

        report.Should().ContainSingle().Which.Should().BePositive();
    }

    [PostgresFact]
    public async Task QueueConsumerAndTransactionalPut()
    {
        Member member = await JoinAsync();
        PostgresCoordinator coordinator = member.Coordinator;
        NpgsqlDataSource dataSource = member.Source;
        await using (NpgsqlCommand create = dataSource.CreateCommand($"CREATE TABLE \"{Schema}\".invoices (id int PRIMARY KEY, amount numeric)"))
        {
            await create.ExecuteNonQueryAsync();
        }

        using var stop = new CancellationTokenSource();
        CancellationToken cancellationToken = stop.Token;
        var sent = new List<Email>();
        Task SendAsync(Email email, CancellationToken lost)
        {
            sent.Add(email);
            stop.Cancel(); // one is enough for the test
            return Task.CompletedTask;
        }

        var invoice = new Invoice(7, 12.50m);
        string insertInvoice = $"INSERT INTO \"{Schema}\".invoices (id, amount) VALUES ($1, $2)";

        // doc: scaleout-put-in-transaction
        PostgresQueue<Email> emails = coordinator.CreateQueue<Email>("emails");
        await using (NpgsqlConnection connection = await dataSource.OpenConnectionAsync(cancellationToken))
        await using (NpgsqlTransaction transaction = await connection.BeginTransactionAsync(cancellationToken))
        {
            await using var insert = new NpgsqlCommand(insertInvoice, connection, transaction)
            {
                Parameters = { new() { Value = invoice.Id }, new() { Value = invoice.Amount } },
            };
            await insert.ExecuteNonQueryAsync(cancellationToken);
            await emails.PutAsync(new Email("billing@example.com", $"Invoice {invoice.Id}"), transaction, cancellationToken: cancellationToken);
            await transaction.CommitAsync(cancellationToken); // the invoice and its email, or neither
        }
        // end doc

        // doc: scaleout-consumer
        PostgresQueue<Email> queue = coordinator.CreateQueue<Email>("emails", new PostgresQueueOptions { MaxAttempts = 5 });
        while (!cancellationToken.IsCancellationRequested)
        {
            await using PostgresDelivery<Email> delivery = await queue.GetAsync(cancellationToken);
            // At least once: this may be the second delivery (delivery.Attempt) of an email whose first consumer
            // crashed after sending it. Make the work idempotent, keyed by delivery.Id.
            await SendAsync(delivery.Item, delivery.Lost);
            await delivery.CompleteAsync(CancellationToken.None); // not completed: delivered again
        }
        // end doc

        sent.Should().Equal(new Email("billing@example.com", "Invoice 7"));
        (await queue.UnfinishedAsync()).Should().Be(0);
    }

    [PostgresFact]
    public async Task ReadLoop()
    {
        PostgresCoordinator coordinator = (await JoinAsync()).Coordinator;
        CancellationToken cancellationToken = CancellationToken.None;
        PostgresQueue<Email> queue = coordinator.CreateQueue<Email>("emails");
        await queue.PutManyAsync([new Email("a@example.com", "One"), new Email("b@example.com", "Two")], cancellationToken: cancellationToken);
        await queue.ShutdownAsync(cancellationToken: cancellationToken); // so that the loop ends once both are read
        var sent = new List<string>();
        Task SendAsync(Email email, CancellationToken lost)
        {
            sent.Add(email.Subject);
            return Task.CompletedTask;
        }

        // doc: scaleout-read-loop
        await foreach (PostgresDelivery<Email> delivery in queue.ReadAllAsync(cancellationToken))
        {
            // An exception here leaves the loop and gives the email back: it is delivered again.
            await SendAsync(delivery.Item, delivery.Lost);
        } // each delivery is completed by the call that takes the next; the loop ends once the queue is shut down and empty
        // end doc

        sent.Should().Equal("One", "Two");
        (await queue.UnfinishedAsync()).Should().Be(0);
    }

    [PostgresFact]
    public async Task ReadLoops_SeveralAtOnce()
    {
        CancellationToken cancellationToken = CancellationToken.None;
        PostgresQueue<Email> queue = await TwentyEmailsShutDownAsync();
        var outbox = new Outbox();
        Task SendAsync(Email email, CancellationToken lost) => outbox.SendAsync(email, lost);

        // doc: scaleout-read-loops
        // Eight at once: eight loops, each finishing with a delivery before it asks for the next.
        await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => Task.Run(async () =>
        {
            await foreach (PostgresDelivery<Email> delivery in queue.ReadAllAsync(cancellationToken))
            {
                await SendAsync(delivery.Item, delivery.Lost);
            }
        })));
        // end doc

        outbox.Sent.Should().BeEquivalentTo(Enumerable.Range(1, 20).Select(i => $"Mail {i}"));
        (await queue.UnfinishedAsync()).Should().Be(0);
    }

    [PostgresFact]
    public async Task GetAll_UnderMapUnordered()
    {
        CancellationToken cancellationToken = CancellationToken.None;
        PostgresQueue<Email> queue = await TwentyEmailsShutDownAsync();
        var outbox = new Outbox();
        Task SendAsync(Email email, CancellationToken lost) => outbox.SendAsync(email, lost);

        // doc: scaleout-get-all
        // Eight at once, across every instance of the service: each delivery is completed by its own work.
        await foreach (string subject in queue.GetAllAsync(cancellationToken).MapUnordered(async (delivery, ct) =>
        {
            await using (delivery) // an exception gives the email back: it is delivered again
            {
                await SendAsync(delivery.Item, delivery.Lost);
                await delivery.CompleteAsync(CancellationToken.None);
                return delivery.Item.Subject;
            }
        }, maxConcurrency: 8))
        {
            Console.WriteLine($"sent {subject}");
        }
        // end doc

        outbox.Sent.Should().BeEquivalentTo(Enumerable.Range(1, 20).Select(i => $"Mail {i}"));
        (await queue.UnfinishedAsync()).Should().Be(0);
    }

    [PostgresFact]
    public async Task Batches()
    {
        PostgresCoordinator coordinator = (await JoinAsync()).Coordinator;
        CancellationToken cancellationToken = CancellationToken.None;
        PostgresQueue<Invoice> invoices = coordinator.CreateQueue<Invoice>("invoices");
        await invoices.PutManyAsync(Enumerable.Range(1, 250).Select(i => new Invoice(i, i)), cancellationToken: cancellationToken);
        decimal total = 0;

        // doc: scaleout-batches
        while (await invoices.CountAsync(cancellationToken) > 0)
        {
            IReadOnlyList<PostgresDelivery<Invoice>> batch = await invoices.GetManyAsync(100, cancellationToken);
            total += batch.Sum(d => d.Item.Amount);
            await invoices.CompleteManyAsync(batch, cancellationToken); // one round trip for the batch
        }
        // end doc

        total.Should().Be(Enumerable.Range(1, 250).Sum());
    }

    /// <summary>A queue of twenty emails, shut down so that reading it ends once all are read.</summary>
    private async Task<PostgresQueue<Email>> TwentyEmailsShutDownAsync()
    {
        PostgresQueue<Email> queue = (await JoinAsync()).Coordinator.CreateQueue<Email>("emails");
        await queue.PutManyAsync(Enumerable.Range(1, 20).Select(i => new Email($"{i}@example.com", $"Mail {i}")));
        await queue.ShutdownAsync();
        return queue;
    }

    /// <summary>Records the subjects of the emails it is asked to send, from any number of callers at once.</summary>
    private sealed class Outbox
    {
        public System.Collections.Concurrent.ConcurrentBag<string> Sent { get; } = [];

        public async Task SendAsync(Email email, CancellationToken lost)
        {
            await Task.Yield();
            Sent.Add(email.Subject);
        }
    }
}
