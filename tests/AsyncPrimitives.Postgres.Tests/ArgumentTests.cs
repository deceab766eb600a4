using System.Threading.RateLimiting;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>Bad input fails at the call, naming the parameter. None of these reaches a server.</summary>
public sealed class ArgumentTests : IAsyncLifetime
{
    private readonly NpgsqlDataSource _source = NpgsqlDataSource.Create("Host=127.0.0.1;Port=1;Username=nobody");
    private PostgresCoordinator _coordinator = null!;

    public Task InitializeAsync()
    {
        _coordinator = new PostgresCoordinator(_source);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _coordinator.DisposeAsync();
        await _source.DisposeAsync();
    }

    [Fact]
    public void Constructor_NullDataSource_Throws() =>
        FluentActions.Invoking(() => new PostgresCoordinator(null!)).Should().Throw<ArgumentNullException>().WithParameterName("dataSource");

    [Fact]
    public async Task Constructor_MultiplexingDataSource_Throws()
    {
        await using NpgsqlDataSource multiplexing = NpgsqlDataSource.Create("Host=127.0.0.1;Port=1;Username=nobody;Multiplexing=true");
        FluentActions.Invoking(() => new PostgresCoordinator(multiplexing)).Should().Throw<ArgumentException>().WithParameterName("dataSource");
    }

    [Theory]
    [InlineData("")]
    [InlineData("Upper")]
    [InlineData("with-dash")]
    [InlineData("with space")]
    [InlineData("1digit_first")]
    [InlineData("quote\"d")]
    [InlineData("a_name_that_is_longer_than_sixty_three_characters_which_postgres_cuts")]
    [InlineData("asynctools\n")]
    [InlineData("pg_asynctools")]
    public void Constructor_InvalidSchemaName_Throws(string schema) =>
        FluentActions.Invoking(() => new PostgresCoordinator(_source, new PostgresCoordinatorOptions { Schema = schema }))
            .Should().Throw<ArgumentException>().WithParameterName("options").WithMessage("*schema*");

    [Theory]
    [InlineData("asynctools")]
    [InlineData("_private")]
    [InlineData("app_2")]
    public async Task Constructor_ValidSchemaName_IsAccepted(string schema)
    {
        await using var coordinator = new PostgresCoordinator(_source, new PostgresCoordinatorOptions { Schema = schema });
        coordinator.ToString().Should().Be($"PostgresCoordinator(schema={schema}, not connected)");
    }

    [Fact]
    public void Constructor_NullSchemaName_Throws() =>
        FluentActions.Invoking(() => new PostgresCoordinator(_source, new PostgresCoordinatorOptions { Schema = null! }))
            .Should().Throw<ArgumentException>().WithParameterName("options");

    [Theory]
    [InlineData(0)]
    [InlineData(999)]
    [InlineData(-1)]
    public void Constructor_LeaseDurationUnderOneSecond_Throws(int milliseconds) =>
        FluentActions.Invoking(() => new PostgresCoordinator(_source, new PostgresCoordinatorOptions { LeaseDuration = TimeSpan.FromMilliseconds(milliseconds) }))
            .Should().Throw<ArgumentOutOfRangeException>().WithParameterName("options").WithMessage("*LeaseDuration*");

    [Fact]
    public void Constructor_InfiniteLeaseDuration_Throws() =>
        FluentActions.Invoking(() => new PostgresCoordinator(_source, new PostgresCoordinatorOptions { LeaseDuration = Timeout.InfiniteTimeSpan }))
            .Should().Throw<ArgumentOutOfRangeException>().WithParameterName("options");

    [Theory]
    [InlineData(0)]
    [InlineData(-5)]
    public void Constructor_NonPositivePollInterval_Throws(int milliseconds) =>
        FluentActions.Invoking(() => new PostgresCoordinator(_source, new PostgresCoordinatorOptions { PollInterval = TimeSpan.FromMilliseconds(milliseconds) }))
            .Should().Throw<ArgumentOutOfRangeException>().WithParameterName("options").WithMessage("*PollInterval*");

    [Fact]
    public void CreateLock_NullName_Throws() =>
        FluentActions.Invoking(() => _coordinator.CreateLock(null!)).Should().Throw<ArgumentNullException>().WithParameterName("name");

    [Theory]
    [InlineData("")]
    [InlineData("   ")]
    public void CreateLockAndSemaphore_EmptyName_Throws(string name)
    {
        FluentActions.Invoking(() => _coordinator.CreateLock(name)).Should().Throw<ArgumentException>().WithParameterName("name");
        FluentActions.Invoking(() => _coordinator.CreateSemaphore(name, 1)).Should().Throw<ArgumentException>().WithParameterName("name");
    }

    [Fact]
    public void CreateLock_NameLongerThan256_Throws()
    {
        FluentActions.Invoking(() => _coordinator.CreateLock(new string('x', 257))).Should().Throw<ArgumentException>().WithParameterName("name");
        _coordinator.CreateLock(new string('x', 256)).Name.Should().HaveLength(256);
    }

    [Fact]
    public void CreateLockSemaphoreAndQueue_NameThatPostgresTextCannotHold_Throws()
    {
        // Not theory data: attribute arguments are stored as UTF-8, which would turn a lone surrogate into U+FFFD.
        foreach (string name in (string[])["a\0b", "a\uD800b", "\uDC00", new string('x', 255) + "\uD800"])
        {
            FluentActions.Invoking(() => _coordinator.CreateLock(name)).Should().Throw<ArgumentException>().WithParameterName("name");
            FluentActions.Invoking(() => _coordinator.CreateSemaphore(name, 1)).Should().Throw<ArgumentException>().WithParameterName("name");
            FluentActions.Invoking(() => _coordinator.CreateQueue<int>(name)).Should().Throw<ArgumentException>().WithParameterName("name");
        }

        _coordinator.CreateLock("\uD83D\uDD12 é").Name.Should().Be("\uD83D\uDD12 é", "a surrogate pair and any other character are fine");
    }

    [Fact]
    public void CreateSemaphore_NullName_Throws() =>
        FluentActions.Invoking(() => _coordinator.CreateSemaphore(null!, 1)).Should().Throw<ArgumentNullException>().WithParameterName("name");

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    public void CreateSemaphore_NonPositiveMaxCount_Throws(int maxCount) =>
        FluentActions.Invoking(() => _coordinator.CreateSemaphore("api", maxCount)).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("maxCount");

    [Fact]
    public void AcquireAsync_NegativeTimeout_ThrowsAtTheCall()
    {
        FluentActions.Invoking(() => _coordinator.CreateLock("job").AcquireAsync(TimeSpan.FromSeconds(-2)))
            .Should().Throw<ArgumentOutOfRangeException>().WithParameterName("timeout");
        FluentActions.Invoking(() => _coordinator.CreateSemaphore("api", 2).AcquireAsync(TimeSpan.FromSeconds(-2)))
            .Should().Throw<ArgumentOutOfRangeException>().WithParameterName("timeout");
    }

    public interface IShape
    {
        double Area { get; }
    }

    public sealed class WithCallback
    {
        public int Id { get; set; }

        public Action? OnDone { get; set; }
    }

    public sealed class WithShapes
    {
        public List<IShape> Shapes { get; set; } = [];
    }

    /// <summary>Abstract and polymorphic, but with no derived type to read it as.</summary>
    [System.Text.Json.Serialization.JsonPolymorphic]
    public abstract record NoDerivedType;

    /// <summary>Read as its derived type through the discriminator; a derived type System.Text.Json cannot read.</summary>
    [System.Text.Json.Serialization.JsonPolymorphic]
    [System.Text.Json.Serialization.JsonDerivedType(typeof(Unreadable), "unreadable")]
    public abstract record WithAnUnreadableDerivedType;

    public sealed record Unreadable(Action Callback) : WithAnUnreadableDerivedType;

    [System.Text.Json.Serialization.JsonPolymorphic]
    [System.Text.Json.Serialization.JsonDerivedType(typeof(Circle), "circle")]
    public abstract record Shape;

    public sealed record Circle(double Radius) : Shape;

    [Fact]
    public void CreateQueue_OfAnAbstractPolymorphicType_IsAccepted_WhenEachDerivedTypeIsReadable()
    {
        _coordinator.CreateQueue<Shape>("q").Name.Should().Be("q");
        FluentActions.Invoking(() => _coordinator.CreateQueue<NoDerivedType>("q")).Should().Throw<ArgumentException>().WithParameterName("T");
        FluentActions.Invoking(() => _coordinator.CreateQueue<WithAnUnreadableDerivedType>("q")).Should().Throw<ArgumentException>().WithParameterName("T");
    }

    [Fact]
    public void CreateQueue_OfATypeJsonCannotReadOrWrite_Throws_NamingT()
    {
        FluentActions.Invoking(() => _coordinator.CreateQueue<Action>("q")).Should().Throw<ArgumentException>().WithParameterName("T");
        FluentActions.Invoking(() => _coordinator.CreateQueue<Type>("q")).Should().Throw<ArgumentException>().WithParameterName("T");
        FluentActions.Invoking(() => _coordinator.CreateQueue<IShape>("q")).Should().Throw<ArgumentException>().WithParameterName("T");
        FluentActions.Invoking(() => _coordinator.CreateQueue<WithCallback>("q")).Should().Throw<ArgumentException>().WithParameterName("T")
            .WithMessage("*WithCallback*");
        FluentActions.Invoking(() => _coordinator.CreateQueue<WithShapes>("q")).Should().Throw<ArgumentException>().WithParameterName("T");
        FluentActions.Invoking(() => _coordinator.CreateQueue<Dictionary<object, int>>("q")).Should().Throw<ArgumentException>()
            .WithParameterName("T", "System.Text.Json writes object keys but cannot read them");
    }

    [Fact]
    public void CreateQueue_OfTypesJsonHandles_IsAccepted()
    {
        _coordinator.CreateQueue<int>("q").Name.Should().Be("q");
        _coordinator.CreateQueue<string>("q");
        _coordinator.CreateQueue<Dictionary<string, List<DateTimeOffset>>>("q");
        _coordinator.CreateQueue<Dictionary<int, string>>("q");
        _coordinator.CreateQueue<Dictionary<Guid, DateTimeOffset>>("q");
        _coordinator.CreateQueue<Dictionary<DayOfWeek, int[]>>("q");
        _coordinator.CreateQueue<PostgresQueueTests.Job>("q");
        _coordinator.CreateQueue<object>("q");
    }

    [Fact]
    public void CreateQueue_BadNameOrOptions_Throws()
    {
        FluentActions.Invoking(() => _coordinator.CreateQueue<int>(null!)).Should().Throw<ArgumentNullException>().WithParameterName("name");
        FluentActions.Invoking(() => _coordinator.CreateQueue<int>(" ")).Should().Throw<ArgumentException>().WithParameterName("name");
        FluentActions.Invoking(() => _coordinator.CreateQueue<int>("q", new PostgresQueueOptions { MaxAttempts = 0 }))
            .Should().Throw<ArgumentOutOfRangeException>().WithParameterName("options").WithMessage("*MaxAttempts*");
        FluentActions.Invoking(() => _coordinator.CreateQueue<int>("q", new PostgresQueueOptions { LeaseDuration = TimeSpan.FromMilliseconds(500) }))
            .Should().Throw<ArgumentOutOfRangeException>().WithParameterName("options").WithMessage("*LeaseDuration*");
        FluentActions.Invoking(() => _coordinator.CreateQueue<int>("q", new PostgresQueueOptions { Order = (QueueOrder)7 }))
            .Should().Throw<ArgumentException>().WithParameterName("options");
    }

    [Fact]
    public void QueueCalls_BadArguments_ThrowAtTheCall()
    {
        PostgresQueue<int> queue = _coordinator.CreateQueue<int>("q");
        FluentActions.Invoking(() => queue.GetManyAsync(0)).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("maxCount");
        FluentActions.Invoking(() => queue.GetManyAsync(0, TimeSpan.FromSeconds(1))).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("maxCount");
        FluentActions.Invoking(() => queue.GetManyAsync(1, TimeSpan.FromSeconds(-2))).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("timeout");
        FluentActions.Invoking(() => queue.GetAsync(TimeSpan.FromSeconds(-2))).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("timeout");
        FluentActions.Invoking(() => queue.JoinAsync(TimeSpan.FromSeconds(-2))).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("timeout");
        FluentActions.Invoking(() => queue.PutManyAsync(null!)).Should().Throw<ArgumentNullException>().WithParameterName("items");
        FluentActions.Invoking(() => queue.CompleteManyAsync(null!)).Should().Throw<ArgumentNullException>().WithParameterName("deliveries");
        FluentActions.Invoking(() => queue.CompleteManyAsync([null!])).Should().Throw<ArgumentNullException>().WithParameterName("deliveries");
    }

    [Fact]
    public void RateLimiter_MoreThanOnePermit_ThrowsAtTheCall_AsTheBclLimitersDo()
    {
        using RateLimiter limiter = _coordinator.CreateSemaphore("api", 2).AsRateLimiter();
        FluentActions.Invoking(() => limiter.AcquireAsync(2)).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("permitCount");
        FluentActions.Invoking(() => limiter.AttemptAcquire(2)).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("permitCount");
    }

    [Fact]
    public async Task Calls_AfterDispose_ThrowObjectDisposed()
    {
        // The data source cannot reach a server: a call that forgot the check would fail with a connection error.
        PostgresLock jobLock = _coordinator.CreateLock("job");
        PostgresSemaphore semaphore = _coordinator.CreateSemaphore("api", 2);
        RateLimiter limiter = semaphore.AsRateLimiter();
        PostgresQueue<int> queue = _coordinator.CreateQueue<int>("q");
        await _coordinator.DisposeAsync();
        await _coordinator.DisposeAsync();

        FluentActions.Invoking(() => _coordinator.CreateLock("job")).Should().Throw<ObjectDisposedException>();
        FluentActions.Invoking(() => _coordinator.CreateSemaphore("api", 1)).Should().Throw<ObjectDisposedException>();
        FluentActions.Invoking(() => _coordinator.CreateQueue<int>("q")).Should().Throw<ObjectDisposedException>();
        await FluentActions.Awaiting(async () => await jobLock.AcquireAsync()).Should().ThrowAsync<ObjectDisposedException>();
        await FluentActions.Awaiting(() => _coordinator.EnsureSchemaAsync()).Should().ThrowAsync<ObjectDisposedException>();
        await FluentActions.Awaiting(async () => await queue.PutAsync(1)).Should().ThrowAsync<ObjectDisposedException>();
        await FluentActions.Awaiting(async () => await queue.GetAsync()).Should().ThrowAsync<ObjectDisposedException>();
        await FluentActions.Awaiting(async () => await queue.CountAsync()).Should().ThrowAsync<ObjectDisposedException>();
        await FluentActions.Awaiting(async () => await jobLock.TryAcquireAsync()).Should().ThrowAsync<ObjectDisposedException>();
        await FluentActions.Awaiting(async () => await semaphore.AcquireAsync()).Should().ThrowAsync<ObjectDisposedException>();
        await FluentActions.Awaiting(async () => await semaphore.TryAcquireAsync()).Should().ThrowAsync<ObjectDisposedException>();
        await FluentActions.Awaiting(async () => await semaphore.GetCurrentCountAsync()).Should().ThrowAsync<ObjectDisposedException>();
        await FluentActions.Awaiting(async () => await limiter.AcquireAsync(0)).Should().ThrowAsync<ObjectDisposedException>();
        await FluentActions.Awaiting(async () => await queue.PutManyAsync([1, 2])).Should().ThrowAsync<ObjectDisposedException>();
        await FluentActions.Awaiting(async () => await queue.TryGetAsync()).Should().ThrowAsync<ObjectDisposedException>();
        await FluentActions.Awaiting(async () => await queue.UnfinishedAsync()).Should().ThrowAsync<ObjectDisposedException>();
        await FluentActions.Awaiting(async () => await queue.DeadLetterCountAsync()).Should().ThrowAsync<ObjectDisposedException>();
        await FluentActions.Awaiting(async () => await queue.JoinAsync()).Should().ThrowAsync<ObjectDisposedException>();
        await FluentActions.Awaiting(async () => await queue.ShutdownAsync()).Should().ThrowAsync<ObjectDisposedException>();
        await FluentActions.Awaiting(async () => await queue.GetManyAsync(2)).Should().ThrowAsync<ObjectDisposedException>();
        await FluentActions.Awaiting(async () => await queue.CompleteManyAsync([])).Should().ThrowAsync<ObjectDisposedException>();
        await FluentActions.Awaiting(async () => await queue.ReadAllAsync().GetAsyncEnumerator().MoveNextAsync()).Should().ThrowAsync<ObjectDisposedException>();
        _coordinator.ToString().Should().Contain("disposed");
    }
}
